//! Parameters and views of accounts and billing in the native API: users, projects and their
//! members, API keys, KYC, wallets, prices and usage.
//!
//! Money is a decimal string with six decimals (`"12.500000"`) in the server's one currency,
//! which every view names; wallets also give the balance in integer micro-units.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::api::GpuRequest;
use crate::error::ApiError;
use crate::id::SandboxId;
use crate::quantity::{ByteSize, MilliCpu};

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// `admin` or `member`.
    pub role: String,
    /// `unverified`, `pending`, `verified` or `rejected`.
    pub kyc: String,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

/// A project the caller belongs to, with their role there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MembershipView {
    /// The project's name.
    pub project: String,
    /// `owner` or `member`.
    pub role: String,
}

/// `GET /v1/me`: who the key belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MeView {
    /// The key's user.
    pub user: UserView,
    /// Their projects.
    pub projects: Vec<MembershipView>,
    /// The key in use.
    pub key: KeyView,
}

/// `POST /v1/users` (administrators).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Unique name (lowercase letters, digits, `-`; 1 to 63 characters).
    pub name: String,
    /// `member` (default) or `admin`.
    #[serde(default)]
    pub role: Option<String>,
}

/// A new user with their first API key, shown only in this answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedUser {
    /// The user.
    pub user: UserView,
    /// Their first API key (not stored: keep it now).
    pub api_key: String,
}

/// `POST /v1/projects`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// Unique name (lowercase letters, digits, `-`; 1 to 63 characters).
    pub name: String,
}

/// A project member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    /// The user's name.
    pub user: String,
    /// `owner` or `member`.
    pub role: String,
}

/// `PUT /v1/projects/{project}/members/{user}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMember {
    /// `owner` or `member`.
    pub role: String,
}

/// An API key as listed (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// Id.
    pub id: i64,
    /// Label.
    pub name: String,
    /// The key's first characters.
    pub prefix: String,
    /// Owner's name.
    pub user: String,
    /// The project it is restricted to, if any.
    pub project: Option<String>,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Revoked, if it is.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<OffsetDateTime>,
}

/// `POST /v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Label (1 to 100 printable characters).
    pub name: String,
    /// Restrict the key to this project.
    #[serde(default)]
    pub project: Option<String>,
    /// Create it for this user (administrators only; default: the caller).
    #[serde(default)]
    pub user: Option<String>,
}

/// A new key, shown only in this answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// The key as listed.
    pub key: KeyView,
    /// The key itself (not stored: keep it now).
    pub api_key: String,
}

/// A user's identity verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KycView {
    /// The user's name.
    pub user: String,
    /// `unverified`, `pending`, `verified` or `rejected`.
    pub status: String,
    /// The reference the provider knows the verification by (once started).
    pub reference: Option<String>,
    /// Where to complete verification, when the server has a provider configured.
    pub verification_url: Option<String>,
}

/// `PUT /v1/users/{user}/kyc` (administrators).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetKyc {
    /// `unverified`, `pending`, `verified` or `rejected`.
    pub status: String,
}

/// The body of a KYC provider's webhook (`POST /v1/kyc/webhook`), signed with
/// `X-Sandpit-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` and
/// `X-Sandpit-Timestamp: <unix seconds>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KycWebhook {
    /// The provider's unique id of this event (a replay of it is refused).
    pub event_id: String,
    /// The verification reference `POST /v1/kyc` returned.
    pub reference: String,
    /// `verified` or `rejected`.
    pub status: String,
}

/// A project's wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WalletView {
    /// The project.
    pub project: String,
    /// The server's currency.
    pub currency: String,
    /// Balance (may be below zero by at most one accrual).
    pub balance: String,
    /// Balance in micro-units.
    pub balance_micros: i64,
    /// Below this the wallet is low.
    pub low_threshold: String,
    /// Whether the balance is below the threshold.
    pub low: bool,
    /// What the project's running and paused sandboxes cost per hour right now.
    pub burn_per_hour: String,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

/// `POST /v1/projects/{project}/wallet/credit` (administrators).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditWallet {
    /// Amount to add, a positive decimal (`"25"`, `"12.50"`; at most six decimals).
    pub amount: String,
    /// A note kept in the ledger.
    #[serde(default)]
    pub note: Option<String>,
}

/// `PATCH /v1/projects/{project}/wallet` (owners and administrators).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWallet {
    /// The low-balance threshold, a decimal not below zero.
    pub low_threshold: String,
}

/// One line of a wallet's ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LedgerLineView {
    /// Id (increasing).
    pub id: i64,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// `credit` or `charge`.
    pub kind: String,
    /// Amount (positive; the kind says which way).
    pub amount: String,
    /// The charged sandbox.
    pub sandbox: Option<String>,
    /// `gpu`, `cpu`, `memory` or `storage` (charges).
    pub resource: Option<String>,
    /// Seconds a charge covers.
    pub seconds: Option<u64>,
    /// Start of the usage a charge covers.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub period_from: Option<OffsetDateTime>,
    /// End of the usage a charge covers.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub period_to: Option<OffsetDateTime>,
    /// A credit's note.
    pub note: Option<String>,
}

/// `POST /v1/estimate`: what a sandbox of this size would cost.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EstimateRequest {
    /// CPU (`"2"`, `"500m"`) [default: the server's default].
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub cpu: Option<MilliCpu>,
    /// Memory (`"4Gi"`) [default: the server's default].
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub memory: Option<ByteSize>,
    /// GPUs.
    #[serde(default)]
    pub gpu: Option<GpuRequest>,
}

/// The price of a spec per hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EstimateView {
    /// The server's currency.
    pub currency: String,
    /// GPU part of a running hour.
    pub gpu_per_hour: String,
    /// CPU part of a running hour.
    pub cpu_per_hour: String,
    /// Memory part of a running hour.
    pub memory_per_hour: String,
    /// One running hour: the sum of the three.
    pub running_per_hour: String,
    /// One paused hour (the disk kept).
    pub paused_per_hour: String,
    /// The GPU model priced (the dearest one matching the request's type), if any.
    pub gpu_model: Option<String>,
}

/// `GET /v1/billing/usage` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct UsageQuery {
    /// Start (a date `2026-11-01`, or RFC 3339; inclusive) [default: 30 days before `to`].
    pub from: Option<String>,
    /// End (a date, or RFC 3339; exclusive) [default: now].
    pub to: Option<String>,
    /// Only this project.
    pub project: Option<String>,
    /// `json` (default) or `csv` (one row per charge line).
    pub format: Option<String>,
}

/// One sandbox's spending in a usage breakdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxUsage {
    /// The sandbox.
    #[schema(value_type = String)]
    pub sandbox: SandboxId,
    /// Its name, if it had one.
    pub name: Option<String>,
    /// Its project.
    pub project: String,
    /// Spent.
    pub amount: String,
}

/// `GET /v1/billing/usage`: charges in a time range, by resource, sandbox, project and UTC day.
/// Each grouping adds up exactly to `total`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageView {
    /// The server's currency.
    pub currency: String,
    /// Start (inclusive).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub from: OffsetDateTime,
    /// End (exclusive).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub to: OffsetDateTime,
    /// Everything charged in the range.
    pub total: String,
    /// By `gpu`, `cpu`, `memory`, `storage`.
    pub by_resource: BTreeMap<String, String>,
    /// By sandbox, dearest first.
    pub by_sandbox: Vec<SandboxUsage>,
    /// By project name.
    pub by_project: BTreeMap<String, String>,
    /// By UTC date (`2026-11-28`).
    pub by_day: BTreeMap<String, String>,
}

/// Longest key label.
pub const MAX_KEY_NAME: usize = 100;

/// Checks an API key's label.
pub fn validate_key_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.chars().count() > MAX_KEY_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            format!("a key name must be 1 to {MAX_KEY_NAME} printable characters"),
        ));
    }
    Ok(())
}
