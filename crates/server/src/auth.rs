//! Authentication: `Authorization: Bearer <key>`; keys are stored as SHA-256 hashes.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use sandpit_store::{ApiKey, MemberRole, Membership, ProjectId, Role, User};
use sandpit_types::ApiError;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::error::AppError;

/// Prefix of every sandpit API key.
pub const KEY_PREFIX: &str = "sp_";

/// Who is calling: the key's user, the key, and the user's project memberships (read with the
/// key, so a membership change applies to the next request).
///
/// Authorization rules, applied everywhere:
/// - an **administrator** with an unrestricted key sees and manages everything;
/// - anyone else sees the projects they are a **member** of (owner or member), and a key
///   restricted to one project sees only that project, and only while its user may;
/// - everything of a project the caller cannot see answers 404, as if it did not exist.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's user.
    pub user: User,
    /// The key.
    pub key: ApiKey,
    /// The project the key is restricted to, if any.
    pub key_project: Option<ProjectId>,
    /// The user's projects and roles there.
    pub memberships: Vec<Membership>,
}

impl Caller {
    /// Whether the caller acts as an administrator (an admin's unrestricted key).
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin && self.key_project.is_none()
    }

    /// The caller's role in `project`, if a member (whatever the key).
    pub fn member_role(&self, project: ProjectId) -> Option<MemberRole> {
        self.memberships.iter().find(|m| m.project == project).map(|m| m.role)
    }

    /// Whether the caller may see and act on things of `project`.
    pub fn can_access(&self, project: ProjectId) -> bool {
        if self.key_project.is_some_and(|k| k != project) {
            return false;
        }
        self.user.role == Role::Admin || self.member_role(project).is_some()
    }

    /// Whether the caller may manage `project` (members, wallet settings): an administrator or
    /// the project's owner, through a key that reaches the project.
    pub fn can_manage(&self, project: ProjectId) -> bool {
        self.can_access(project)
            && (self.user.role == Role::Admin || self.member_role(project) == Some(MemberRole::Owner))
    }

    /// The projects the caller may see (`None`: all).
    pub fn visible_projects(&self) -> Option<Vec<ProjectId>> {
        match self.key_project {
            Some(p) => Some(if self.can_access(p) { vec![p] } else { Vec::new() }),
            None if self.user.role == Role::Admin => None,
            None => Some(self.memberships.iter().map(|m| m.project).collect()),
        }
    }

    /// Refuses unless the caller acts as an administrator.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden { message: format!("only an administrator may {what}") })
        }
    }
}

/// A new random key: `sp_` and 40 hex digits (160 bits).
pub fn generate_key() -> String {
    let mut b = [0u8; 20];
    rand::rng().fill_bytes(&mut b);
    format!("{KEY_PREFIX}{}", hex::encode(b))
}

/// The stored hash of a key.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The part of a key shown in lists.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(KEY_PREFIX.len() + 6).collect()
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let key =
            header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).ok_or(ApiError::Unauthorized)?;
        Caller::from_key(app, key).await
    }
}

impl Caller {
    /// The caller a key stands for (401 for an unknown or revoked key).
    pub async fn from_key(app: &App, key: &str) -> Result<Self, AppError> {
        if key.is_empty() || key.len() > 256 {
            return Err(ApiError::Unauthorized.into());
        }
        let (key, user) = app.store.find_api_key(&hash_key(key)).await?.ok_or(ApiError::Unauthorized)?;
        let memberships = app.store.memberships(user.id).await?;
        Ok(Caller { key_project: key.project, user, key, memberships })
    }
}
