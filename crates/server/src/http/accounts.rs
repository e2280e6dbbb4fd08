//! Accounts: who am I, users (administrators), projects and members, API keys, KYC and its
//! provider webhook.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sandpit_store::{ApiKey, ApiKeyId, KycStatus, MemberRole, NewApiKey, Project, Role, User};
use sandpit_types::accounts::{
    CreateKey, CreateProject, CreateUser, CreatedKey, CreatedUser, KeyView, KycView, KycWebhook, MeView,
    MemberView, MembershipView, SetKyc, SetMember, UserView, validate_key_name,
};
use sandpit_types::api::{ProjectView, validate_name};
use sandpit_types::{ApiError, ErrorBody};
use serde::Deserialize;
use sha2::Sha256;
use utoipa::IntoParams;

use super::extract::{ApiJson, ApiQuery, parse_json};
use crate::app::App;
use crate::auth::{Caller, display_prefix, generate_key, hash_key};
use crate::error::AppResult;

/// Header carrying a webhook's signature: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-sandpit-signature";
/// Header carrying a webhook's Unix timestamp (seconds).
pub const TIMESTAMP_HEADER: &str = "x-sandpit-timestamp";

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
        Role::Member => "member",
    }
}

fn member_role_name(r: MemberRole) -> &'static str {
    match r {
        MemberRole::Owner => "owner",
        MemberRole::Member => "member",
    }
}

fn parse_member_role(s: &str) -> Result<MemberRole, ApiError> {
    match s {
        "owner" => Ok(MemberRole::Owner),
        "member" => Ok(MemberRole::Member),
        _ => Err(ApiError::invalid("role", format!("role must be owner or member, not {s:?}"))),
    }
}

/// A user as the API shows it.
pub fn user_view(u: &User) -> UserView {
    UserView {
        id: u.id.0,
        name: u.name.clone(),
        role: role_name(u.role).into(),
        kyc: u.kyc.as_str().into(),
        created_at: u.created_at,
    }
}

async fn key_view(app: &App, k: &ApiKey) -> AppResult<KeyView> {
    let user = app.store.get_user(k.user).await?.map(|u| u.name).unwrap_or_default();
    let project = match k.project {
        Some(p) => app.store.get_project(p).await?.map(|p| p.name),
        None => None,
    };
    Ok(KeyView {
        id: k.id.0,
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        user,
        project,
        created_at: k.created_at,
        revoked_at: k.revoked_at,
    })
}

fn project_view(p: &Project, caller: &Caller) -> ProjectView {
    ProjectView {
        name: p.name.clone(),
        created_at: p.created_at,
        role: caller.member_role(p.id).map(|r| member_role_name(r).to_string()),
    }
}

/// The project `name` if the caller may see it; 404 as if it did not exist otherwise.
pub async fn visible_project(app: &App, caller: &Caller, name: &str) -> AppResult<Project> {
    let not_found = || ApiError::NotFound { what: "project", id: name.to_string() };
    let p = app.store.project_by_name(name).await?.ok_or_else(not_found)?;
    if !caller.can_access(p.id) {
        return Err(not_found().into());
    }
    Ok(p)
}

/// [`visible_project`], and the caller must manage it (owner or administrator): 403 otherwise.
async fn managed_project(app: &App, caller: &Caller, name: &str) -> AppResult<Project> {
    let p = visible_project(app, caller, name).await?;
    if !caller.can_manage(p.id) {
        return Err(ApiError::Forbidden {
            message: format!("only an owner of project {name} or an administrator may do this"),
        }
        .into());
    }
    Ok(p)
}

/// The user `name`, for administrators.
async fn user_named(app: &App, name: &str) -> AppResult<User> {
    Ok(app
        .store
        .user_by_name(name)
        .await?
        .ok_or_else(|| ApiError::NotFound { what: "user", id: name.into() })?)
}

// ---------------------------------------------------------------------------------------------
// Me and users.

/// Who the key belongs to: the user, their projects and the key.
#[utoipa::path(get, path = "/v1/me", tag = "accounts",
    responses((status = 200, description = "The caller", body = MeView),
        (status = 401, description = "No or bad key", body = ErrorBody)))]
pub async fn me(State(app): State<Arc<App>>, caller: Caller) -> AppResult<axum::Json<MeView>> {
    let mut projects = Vec::new();
    for m in &caller.memberships {
        if caller.key_project.is_some_and(|k| k != m.project) {
            continue;
        }
        if let Some(p) = app.store.get_project(m.project).await? {
            projects.push(MembershipView { project: p.name, role: member_role_name(m.role).into() });
        }
    }
    projects.sort_by(|a, b| a.project.cmp(&b.project));
    Ok(axum::Json(MeView {
        user: user_view(&caller.user),
        projects,
        key: key_view(&app, &caller.key).await?,
    }))
}

/// Every user (administrators).
#[utoipa::path(get, path = "/v1/users", tag = "accounts",
    responses((status = 200, description = "Users by name", body = Vec<UserView>),
        (status = 401, description = "No or bad key", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody)))]
pub async fn list_users(State(app): State<Arc<App>>, caller: Caller) -> AppResult<axum::Json<Vec<UserView>>> {
    caller.require_admin("list users")?;
    Ok(axum::Json(app.store.list_users().await?.iter().map(user_view).collect()))
}

/// Creates a user with a first API key, shown only in this answer (administrators). The user
/// starts unverified and in no project.
#[utoipa::path(post, path = "/v1/users", tag = "accounts", request_body = CreateUser,
    responses((status = 201, description = "Created, with the key", body = CreatedUser),
        (status = 400, description = "Bad name or role", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody)))]
pub async fn create_user(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateUser>,
) -> AppResult<(StatusCode, axum::Json<CreatedUser>)> {
    caller.require_admin("create users")?;
    validate_name("name", &req.name)?;
    let role = match req.role.as_deref() {
        None | Some("member") => Role::Member,
        Some("admin") => Role::Admin,
        Some(r) => {
            return Err(ApiError::invalid("role", format!("role must be member or admin, not {r:?}")).into());
        }
    };
    let user = app.store.create_user(&req.name, role).await?;
    let key = generate_key();
    app.store
        .create_api_key(NewApiKey {
            user: user.id,
            project: None,
            name: "initial".into(),
            hash: hash_key(&key),
            prefix: display_prefix(&key),
        })
        .await?;
    tracing::info!(user = %user.name, by = %caller.user.name, "user created");
    Ok((StatusCode::CREATED, axum::Json(CreatedUser { user: user_view(&user), api_key: key })))
}

// ---------------------------------------------------------------------------------------------
// KYC.

fn kyc_view(app: &App, u: &User) -> KycView {
    let verification_url = match (&app.config.kyc.verification_url, &u.kyc_reference) {
        (Some(t), Some(r)) if u.kyc == KycStatus::Pending => Some(t.replace("{reference}", r)),
        _ => None,
    };
    KycView {
        user: u.name.clone(),
        status: u.kyc.as_str().into(),
        reference: u.kyc_reference.clone(),
        verification_url,
    }
}

/// The caller's identity verification.
#[utoipa::path(get, path = "/v1/kyc", tag = "kyc",
    responses((status = 200, description = "Status", body = KycView),
        (status = 401, description = "No or bad key", body = ErrorBody)))]
pub async fn kyc_status(State(app): State<Arc<App>>, caller: Caller) -> axum::Json<KycView> {
    axum::Json(kyc_view(&app, &caller.user))
}

/// Starts the caller's identity verification: the status becomes `pending` with a reference the
/// provider's webhook will name; the answer says where to complete it.
#[utoipa::path(post, path = "/v1/kyc", tag = "kyc",
    responses((status = 200, description = "Pending", body = KycView),
        (status = 409, description = "Already verified", body = ErrorBody)))]
pub async fn kyc_start(State(app): State<Arc<App>>, caller: Caller) -> AppResult<axum::Json<KycView>> {
    let u = &caller.user;
    if u.kyc == KycStatus::Verified {
        return Err(ApiError::Conflict {
            field: "status".into(),
            message: "your identity is already verified".into(),
        }
        .into());
    }
    let reference = match (&u.kyc_reference, u.kyc) {
        (Some(r), KycStatus::Pending) => r.clone(),
        _ => {
            let mut b = [0u8; 16];
            rand::rng().fill_bytes(&mut b);
            format!("kyc_{}", hex::encode(b))
        }
    };
    let user = app.store.set_kyc(u.id, KycStatus::Pending, Some(&reference)).await?;
    tracing::info!(user = %user.name, "identity verification started");
    Ok(axum::Json(kyc_view(&app, &user)))
}

/// Sets a user's verification status (administrators).
#[utoipa::path(put, path = "/v1/users/{user}/kyc", tag = "kyc", request_body = SetKyc,
    params(("user" = String, Path, description = "User name")),
    responses((status = 200, description = "The new status", body = KycView),
        (status = 400, description = "Unknown status", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody)))]
pub async fn set_kyc(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<SetKyc>,
) -> AppResult<axum::Json<KycView>> {
    caller.require_admin("set a user's verification status")?;
    let status = KycStatus::parse(&req.status).ok_or_else(|| {
        ApiError::invalid("status", "status must be unverified, pending, verified or rejected")
    })?;
    let user = user_named(&app, &name).await?;
    let user = app.store.set_kyc(user.id, status, None).await?;
    tracing::info!(user = %user.name, status = status.as_str(), by = %caller.user.name, "verification status set");
    Ok(axum::Json(kyc_view(&app, &user)))
}

/// What a verified webhook did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct WebhookOutcome {
    /// The user's name.
    pub user: String,
    /// Their status now.
    pub status: String,
}

/// The KYC provider's webhook: sets a pending user `verified` or `rejected`. Authenticated by
/// `X-Sandpit-Signature: sha256=<hex HMAC-SHA256(kyc.webhook_secret, "<timestamp>.<raw body>")>`
/// and `X-Sandpit-Timestamp` (Unix seconds, within `kyc.webhook_tolerance_s` of the server's
/// clock); each `event_id` is accepted once.
#[utoipa::path(post, path = "/v1/kyc/webhook", tag = "kyc", security(()), request_body = KycWebhook,
    responses((status = 200, description = "Applied", body = WebhookOutcome),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 401, description = "Missing, bad or stale signature", body = ErrorBody),
        (status = 404, description = "Unknown reference", body = ErrorBody),
        (status = 409, description = "Event already received (replay)", body = ErrorBody),
        (status = 503, description = "No webhook secret configured", body = ErrorBody)))]
pub async fn kyc_webhook(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<axum::Json<WebhookOutcome>> {
    let Some(secret) = &app.config.kyc.webhook_secret else {
        return Err(ApiError::Unavailable {
            message: "this server has no KYC webhook secret configured".into(),
        }
        .into());
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let (Some(ts), Some(sig)) = (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER)) else {
        return Err(unauthorized("missing X-Sandpit-Timestamp or X-Sandpit-Signature"));
    };
    let Ok(ts_secs) = ts.parse::<i64>() else { return Err(unauthorized("bad X-Sandpit-Timestamp")) };
    let Some(sig_hex) = sig.strip_prefix("sha256=") else {
        return Err(unauthorized("X-Sandpit-Signature must be sha256=<hex>"));
    };
    let Ok(sig_bytes) = hex::decode(sig_hex) else { return Err(unauthorized("bad signature encoding")) };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        .map_err(|_| unauthorized("unusable secret"))?;
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&body);
    if mac.verify_slice(&sig_bytes).is_err() {
        return Err(unauthorized("the signature does not match"));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let tolerance = i64::try_from(app.config.kyc.webhook_tolerance_s).unwrap_or(i64::MAX);
    if (now - ts_secs).abs() > tolerance {
        return Err(unauthorized("the timestamp is too far from the server's clock (replay?)"));
    }
    let event: KycWebhook = parse_json(&body)?;
    if event.event_id.is_empty() || event.event_id.len() > 200 {
        return Err(ApiError::invalid("event_id", "event_id must be 1 to 200 characters").into());
    }
    let status = match event.status.as_str() {
        "verified" => KycStatus::Verified,
        "rejected" => KycStatus::Rejected,
        s => {
            return Err(ApiError::invalid(
                "status",
                format!("status must be verified or rejected, not {s:?}"),
            )
            .into());
        }
    };
    if app.store.webhook_seen(&event.event_id).await? {
        return Err(replayed(&event.event_id));
    }
    let user = app
        .store
        .user_by_kyc_reference(&event.reference)
        .await?
        .ok_or_else(|| ApiError::NotFound { what: "verification reference", id: event.reference.clone() })?;
    if user.kyc != KycStatus::Pending && user.kyc != status {
        tracing::warn!(user = %user.name, status = user.kyc.as_str(), "KYC webhook for a verification that is not pending");
        return Err(ApiError::Conflict {
            field: "reference".into(),
            message: format!(
                "the verification {} is not pending (it is {})",
                event.reference,
                user.kyc.as_str()
            ),
        }
        .into());
    }
    // Apply, then record: a crash between the two makes the provider's retry apply it again
    // (the same effect) instead of finding it recorded and losing it.
    let user = app.store.set_kyc(user.id, status, None).await?;
    if !app.store.record_webhook(&event.event_id).await? {
        return Err(replayed(&event.event_id));
    }
    tracing::info!(user = %user.name, status = status.as_str(), "verification status set by the provider");
    Ok(axum::Json(WebhookOutcome { user: user.name, status: status.as_str().into() }))
}

fn unauthorized(why: &str) -> crate::error::AppError {
    tracing::warn!(reason = why, "KYC webhook refused");
    ApiError::BadSignature { message: format!("webhook refused: {why}") }.into()
}

fn replayed(event_id: &str) -> crate::error::AppError {
    tracing::warn!(event_id, "KYC webhook replayed");
    ApiError::Conflict {
        field: "event_id".into(),
        message: format!("webhook event {event_id:?} was already received"),
    }
    .into()
}

// ---------------------------------------------------------------------------------------------
// Projects and members.

/// The projects the caller can see, with their role in each.
#[utoipa::path(get, path = "/v1/projects", tag = "projects",
    responses((status = 200, description = "Projects", body = Vec<ProjectView>),
        (status = 401, description = "No or bad key", body = ErrorBody)))]
pub async fn list_projects(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> AppResult<axum::Json<Vec<ProjectView>>> {
    let all = app.store.list_projects().await?;
    Ok(axum::Json(all.iter().filter(|p| caller.can_access(p.id)).map(|p| project_view(p, &caller)).collect()))
}

/// Creates a project; the caller becomes its owner. Its wallet starts empty.
#[utoipa::path(post, path = "/v1/projects", tag = "projects", request_body = CreateProject,
    responses((status = 201, description = "Created", body = ProjectView),
        (status = 400, description = "Bad name", body = ErrorBody),
        (status = 403, description = "A project-restricted key", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody)))]
pub async fn create_project(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateProject>,
) -> AppResult<(StatusCode, axum::Json<ProjectView>)> {
    validate_name("name", &req.name)?;
    if caller.key_project.is_some() {
        return Err(ApiError::Forbidden {
            message: "a key restricted to one project cannot create projects".into(),
        }
        .into());
    }
    let p = app.store.create_project(&req.name).await?;
    let m = app.store.add_member(p.id, caller.user.id, MemberRole::Owner).await?;
    app.store.set_low_threshold(p.id, app.config.billing.low_balance_default.micros()).await?;
    tracing::info!(project = %p.name, by = %caller.user.name, "project created");
    let mut caller = caller;
    caller.memberships.push(m);
    Ok((StatusCode::CREATED, axum::Json(project_view(&p, &caller))))
}

/// One project.
#[utoipa::path(get, path = "/v1/projects/{project}", tag = "projects",
    params(("project" = String, Path, description = "Project name")),
    responses((status = 200, description = "The project", body = ProjectView),
        (status = 404, description = "No such project (or not yours)", body = ErrorBody)))]
pub async fn get_project(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
) -> AppResult<axum::Json<ProjectView>> {
    let p = visible_project(&app, &caller, &name).await?;
    Ok(axum::Json(project_view(&p, &caller)))
}

/// A project's members.
#[utoipa::path(get, path = "/v1/projects/{project}/members", tag = "projects",
    params(("project" = String, Path, description = "Project name")),
    responses((status = 200, description = "Members by name", body = Vec<MemberView>),
        (status = 404, description = "No such project (or not yours)", body = ErrorBody)))]
pub async fn list_members(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
) -> AppResult<axum::Json<Vec<MemberView>>> {
    let p = visible_project(&app, &caller, &name).await?;
    let members = app.store.members(p.id).await?;
    Ok(axum::Json(
        members
            .iter()
            .map(|(m, u)| MemberView { user: u.name.clone(), role: member_role_name(m.role).into() })
            .collect(),
    ))
}

/// Whether removing or demoting `user` would leave `project` without an owner.
async fn last_owner(app: &App, project: &Project, user: sandpit_store::UserId) -> AppResult<bool> {
    let members = app.store.members(project.id).await?;
    let owners: Vec<_> = members.iter().filter(|(m, _)| m.role == MemberRole::Owner).collect();
    Ok(owners.len() == 1 && owners[0].0.user == user)
}

/// Adds a user to a project or changes their role (owners and administrators). A project keeps
/// at least one owner.
#[utoipa::path(put, path = "/v1/projects/{project}/members/{user}", tag = "projects", request_body = SetMember,
    params(("project" = String, Path, description = "Project name"), ("user" = String, Path, description = "User name")),
    responses((status = 200, description = "The membership", body = MemberView),
        (status = 400, description = "Bad role", body = ErrorBody),
        (status = 403, description = "Not an owner", body = ErrorBody),
        (status = 404, description = "No such project or user", body = ErrorBody),
        (status = 409, description = "It would leave the project without an owner", body = ErrorBody)))]
pub async fn set_member(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, user)): Path<(String, String)>,
    ApiJson(req): ApiJson<SetMember>,
) -> AppResult<axum::Json<MemberView>> {
    let p = managed_project(&app, &caller, &project).await?;
    let role = parse_member_role(&req.role)?;
    let u = user_named(&app, &user).await?;
    if role != MemberRole::Owner && last_owner(&app, &p, u.id).await? {
        return Err(ApiError::Conflict {
            field: "role".into(),
            message: format!("{user} is the last owner of {project}: make someone else owner first"),
        }
        .into());
    }
    let m = app.store.add_member(p.id, u.id, role).await?;
    tracing::info!(project = %p.name, user = %u.name, role = member_role_name(m.role), by = %caller.user.name, "member set");
    Ok(axum::Json(MemberView { user: u.name, role: member_role_name(m.role).into() }))
}

/// Removes a user from a project (owners and administrators; anyone may leave). A project keeps
/// at least one owner.
#[utoipa::path(delete, path = "/v1/projects/{project}/members/{user}", tag = "projects",
    params(("project" = String, Path, description = "Project name"), ("user" = String, Path, description = "User name")),
    responses((status = 204, description = "Removed (or was not a member)"),
        (status = 403, description = "Not an owner", body = ErrorBody),
        (status = 404, description = "No such project or user", body = ErrorBody),
        (status = 409, description = "The last owner", body = ErrorBody)))]
pub async fn remove_member(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, user)): Path<(String, String)>,
) -> AppResult<StatusCode> {
    let p = visible_project(&app, &caller, &project).await?;
    if user != caller.user.name && !caller.can_manage(p.id) {
        return Err(ApiError::Forbidden {
            message: format!("only an owner of project {project} or an administrator may remove members"),
        }
        .into());
    }
    let u = user_named(&app, &user).await?;
    if last_owner(&app, &p, u.id).await? {
        return Err(ApiError::Conflict {
            field: "user".into(),
            message: format!("{user} is the last owner of {project}: make someone else owner first"),
        }
        .into());
    }
    app.store.remove_member(p.id, u.id).await?;
    tracing::info!(project = %p.name, user = %u.name, by = %caller.user.name, "member removed");
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// API keys.

/// `?all=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeysQuery {
    /// Every user's keys (administrators).
    #[serde(default)]
    all: bool,
}

/// The caller's API keys (or, for administrators with `?all=true`, everyone's), newest first,
/// revoked ones included. Never the keys themselves.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", params(KeysQuery),
    responses((status = 200, description = "Keys", body = Vec<KeyView>),
        (status = 403, description = "`all` without being an administrator", body = ErrorBody)))]
pub async fn list_keys(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<KeysQuery>,
) -> AppResult<axum::Json<Vec<KeyView>>> {
    let keys = if q.all {
        caller.require_admin("list every user's keys")?;
        app.store.list_api_keys(None).await?
    } else {
        app.store.list_api_keys(Some(caller.user.id)).await?
    };
    let mut out = Vec::with_capacity(keys.len());
    for k in keys.iter().filter(|k| caller.key_project.is_none() || k.project == caller.key_project) {
        out.push(key_view(&app, k).await?);
    }
    Ok(axum::Json(out))
}

/// Creates an API key, shown only in this answer. A key restricted to a project reaches only
/// that project; a project-restricted caller can only make keys restricted to its project.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, description = "Created, with the key", body = CreatedKey),
        (status = 400, description = "Bad name", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 404, description = "No such project or user", body = ErrorBody)))]
pub async fn create_key(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateKey>,
) -> AppResult<(StatusCode, axum::Json<CreatedKey>)> {
    validate_key_name(&req.name)?;
    let owner = match &req.user {
        Some(u) if u != &caller.user.name => {
            caller.require_admin("create keys for other users")?;
            user_named(&app, u).await?
        }
        _ => caller.user.clone(),
    };
    let project = match &req.project {
        Some(name) => {
            let p = visible_project(&app, &caller, name).await?;
            let owner_member = app.store.memberships(owner.id).await?.iter().any(|m| m.project == p.id);
            if owner.role != Role::Admin && !owner_member {
                return Err(ApiError::invalid(
                    "project",
                    format!("{} is not a member of project {name}", owner.name),
                )
                .into());
            }
            Some(p.id)
        }
        None if caller.key_project.is_some() => {
            return Err(ApiError::Forbidden {
                message:
                    "a key restricted to one project can only create keys restricted to it: name the project"
                        .into(),
            }
            .into());
        }
        None => None,
    };
    let key = generate_key();
    let stored = app
        .store
        .create_api_key(NewApiKey {
            user: owner.id,
            project,
            name: req.name.clone(),
            hash: hash_key(&key),
            prefix: display_prefix(&key),
        })
        .await?;
    tracing::info!(key = %stored.prefix, user = %owner.name, by = %caller.user.name, "API key created");
    Ok((StatusCode::CREATED, axum::Json(CreatedKey { key: key_view(&app, &stored).await?, api_key: key })))
}

/// Revokes an API key (its owner or an administrator). Idempotent.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = i64, Path, description = "Key id")),
    responses((status = 204, description = "Revoked"),
        (status = 404, description = "No such key (or not yours)", body = ErrorBody)))]
pub async fn revoke_key(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> AppResult<StatusCode> {
    let not_found = || ApiError::NotFound { what: "API key", id: id.to_string() };
    let k = app.store.get_api_key(ApiKeyId(id)).await?.ok_or_else(not_found)?;
    let mine = k.user == caller.user.id && (caller.key_project.is_none() || k.project == caller.key_project);
    if !mine && !caller.is_admin() {
        return Err(not_found().into());
    }
    app.store.revoke_api_key(k.id).await?;
    tracing::info!(key = %k.prefix, by = %caller.user.name, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
