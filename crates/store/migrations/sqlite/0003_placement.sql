-- The scheduler's reservation of a running (or provisioning) sandbox: which GPUs (and shares) it
-- holds, as opaque JSON written by the server. NULL while paused or ended, and for old rows.
ALTER TABLE sandboxes ADD COLUMN placement TEXT;
