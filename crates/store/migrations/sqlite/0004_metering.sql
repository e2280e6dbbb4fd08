-- What a sandbox held from a state change on, for metering: JSON written by the server on the
-- state events that enter `running` (CPU, memory, the GPUs of its placement) or `paused` (the
-- disk kept). Usage is computed from these persisted transitions. NULL on other events and on
-- events written before this migration (the server then falls back to the sandbox's own spec).
ALTER TABLE sandbox_events ADD COLUMN usage TEXT;
