//! The sandbox lifecycle: states and the one table of allowed transitions.
//!
//! ```text
//!   create ─► provisioning ──── provision_failed ──► failed      (reason + logs kept)
//!                  │ provisioned                       ▲
//!                  ▼                                   │ runtime_failed
//!         ┌──► running ────────────────────────────────┤
//!         │       │  pause (user, out of funds)
//!  resume │       ▼
//!         └─── paused
//!   provisioning, running, paused ─► terminated   on terminate (delete, timeout, workload exit,
//!                                                 retention expiry)
//! ```
//!
//! `terminated` and `failed` are final. Any transition not in [`SandboxState::apply`] is refused
//! with a [`TransitionError`] that carries the current state (HTTP 409).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a sandbox is in its life.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    /// Being prepared: image, disk, container.
    Provisioning,
    /// Its container runs.
    Running,
    /// No process runs; its disk state is kept.
    Paused,
    /// Ended normally (deleted, timed out, workload exited). Final.
    Terminated,
    /// Ended by an error. Final.
    Failed,
}

/// Something that happens to a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxEvent {
    /// Provisioning finished; the container runs.
    Provisioned,
    /// Provisioning failed.
    ProvisionFailed,
    /// Pause was asked for.
    Pause,
    /// Resume was asked for and succeeded.
    Resume,
    /// Delete, timeout, workload exit or retention expiry.
    Terminate,
    /// The runtime lost or broke the sandbox.
    RuntimeFailed,
}

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {event} a sandbox that is {from}")]
pub struct TransitionError {
    /// The state the sandbox is in.
    pub from: SandboxState,
    /// What was attempted.
    pub event: SandboxEvent,
}

impl SandboxState {
    /// The one transition table.
    pub fn apply(self, event: SandboxEvent) -> Result<SandboxState, TransitionError> {
        use SandboxEvent as E;
        use SandboxState as S;
        let to = match (self, event) {
            (S::Provisioning, E::Provisioned) => S::Running,
            (S::Provisioning, E::ProvisionFailed) => S::Failed,
            (S::Running, E::Pause) => S::Paused,
            (S::Paused, E::Resume) => S::Running,
            (S::Provisioning | S::Running | S::Paused, E::Terminate) => S::Terminated,
            (S::Running | S::Paused, E::RuntimeFailed) => S::Failed,
            _ => return Err(TransitionError { from: self, event }),
        };
        Ok(to)
    }

    /// Whether no transition leaves this state.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Terminated | Self::Failed)
    }

    /// Whether the sandbox holds (or is about to hold) compute resources.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Provisioning | Self::Running)
    }

    /// All states.
    pub const ALL: [SandboxState; 5] =
        [Self::Provisioning, Self::Running, Self::Paused, Self::Terminated, Self::Failed];

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Terminated => "terminated",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for SandboxEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Provisioned => "finish provisioning",
            Self::ProvisionFailed => "fail provisioning of",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Terminate => "terminate",
            Self::RuntimeFailed => "fail",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SandboxEvent as E;
    use SandboxState as S;

    const EVENTS: [SandboxEvent; 6] =
        [E::Provisioned, E::ProvisionFailed, E::Pause, E::Resume, E::Terminate, E::RuntimeFailed];

    #[test]
    fn lifecycle_follows_the_design_diagram() {
        assert_eq!(S::Provisioning.apply(E::Provisioned), Ok(S::Running));
        assert_eq!(S::Running.apply(E::Pause), Ok(S::Paused));
        assert_eq!(S::Paused.apply(E::Resume), Ok(S::Running));
        assert_eq!(S::Paused.apply(E::Terminate), Ok(S::Terminated));
        assert_eq!(S::Provisioning.apply(E::ProvisionFailed), Ok(S::Failed));
        assert_eq!(S::Running.apply(E::RuntimeFailed), Ok(S::Failed));
    }

    #[test]
    fn pausing_a_paused_sandbox_is_a_typed_error_with_the_current_state() {
        let err = S::Paused.apply(E::Pause).unwrap_err();
        assert_eq!(err, TransitionError { from: S::Paused, event: E::Pause });
        assert_eq!(err.to_string(), "cannot pause a sandbox that is paused");
        assert!(S::Running.apply(E::Resume).is_err());
    }

    #[test]
    fn final_states_allow_no_transition() {
        for s in S::ALL.into_iter().filter(|s| s.is_final()) {
            for e in EVENTS {
                assert!(s.apply(e).is_err(), "{s} {e}");
            }
        }
    }
}
