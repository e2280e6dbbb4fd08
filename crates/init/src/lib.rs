//! `sandpit-init`: PID 1 of every sandbox, and the protocol the host speaks to it.
//!
//! The library part holds only the wire protocol, shared by the init binary and the host runtime.

pub mod protocol;
