//! Shared types of sandpit: typed IDs, quantities, sandbox states and validation.
//!
//! This crate is pure: no IO. Everything here is used by more than one other crate.

pub mod accounts;
pub mod api;
pub mod env;
pub mod error;
pub mod id;
pub mod quantity;
pub mod state;

pub use env::{EnvError, EnvVars};
pub use error::{ApiError, ErrorBody};
pub use id::{IdError, SandboxId};
pub use quantity::{ByteSize, MilliCpu, QuantityError};
pub use state::{SandboxEvent, SandboxState, TransitionError};
