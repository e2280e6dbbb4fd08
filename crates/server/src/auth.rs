//! Authentication: `Authorization: Bearer <key>`; keys are stored as SHA-256 hashes.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use sandpit_store::{ApiKey, ProjectId, Role, User};
use sandpit_types::ApiError;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::error::AppError;

/// Prefix of every sandpit API key.
pub const KEY_PREFIX: &str = "sp_";

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's user.
    pub user: User,
    /// The key.
    pub key: ApiKey,
    /// The project the key is restricted to, if any.
    pub key_project: Option<ProjectId>,
}

impl Caller {
    /// Whether the caller may see and act on things of `project`.
    pub fn can_access(&self, project: ProjectId) -> bool {
        match self.key_project {
            Some(p) => p == project,
            None => self.user.role == Role::Admin,
        }
    }

    /// The projects the caller may see (`None`: all).
    pub fn visible_projects(&self) -> Option<Vec<ProjectId>> {
        match (self.key_project, self.user.role) {
            (Some(p), _) => Some(vec![p]),
            (None, Role::Admin) => None,
            (None, Role::Member) => Some(Vec::new()),
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
        if key.is_empty() || key.len() > 256 {
            return Err(ApiError::Unauthorized.into());
        }
        let (key, user) = app.store.find_api_key(&hash_key(key)).await?.ok_or(ApiError::Unauthorized)?;
        Ok(Caller { key_project: key.project, user, key })
    }
}
