//! The `Backend` trait and the local backend that runs sandboxes with an OCI runtime.
