//! Wallets, prices and usage.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use sandpit_billing::Money;
use sandpit_store::{LedgerEntry, LedgerFilter, LedgerKind};
use sandpit_types::accounts::{
    CreditWallet, EstimateRequest, EstimateView, LedgerLineView, UpdateWallet, UsageView, WalletView,
};
use sandpit_types::{ApiError, ErrorBody};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::IntoParams;

use super::accounts::visible_project;
use super::extract::{ApiJson, ApiQuery};
use crate::app::App;
use crate::auth::Caller;
use crate::error::{AppError, AppResult};

/// The longest range `GET /v1/billing/usage` covers.
const MAX_USAGE_DAYS: i64 = 400;

fn money(field: &str, text: &str) -> Result<Money, ApiError> {
    text.parse::<Money>().map_err(|e| ApiError::invalid(field, format!("{field}: {e}")))
}

/// A project's wallet: balance, low-balance threshold and what its sandboxes burn per hour.
#[utoipa::path(get, path = "/v1/projects/{project}/wallet", tag = "billing",
    params(("project" = String, Path, description = "Project name")),
    responses((status = 200, description = "The wallet", body = WalletView),
        (status = 404, description = "No such project (or not yours)", body = ErrorBody)))]
pub async fn wallet(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
) -> AppResult<axum::Json<WalletView>> {
    let p = visible_project(&app, &caller, &name).await?;
    Ok(axum::Json(app.wallet_view(&p).await?))
}

/// Sets a wallet's low-balance threshold (owners and administrators).
#[utoipa::path(patch, path = "/v1/projects/{project}/wallet", tag = "billing", request_body = UpdateWallet,
    params(("project" = String, Path, description = "Project name")),
    responses((status = 200, description = "The wallet", body = WalletView),
        (status = 400, description = "Bad amount", body = ErrorBody),
        (status = 403, description = "Not an owner", body = ErrorBody),
        (status = 404, description = "No such project (or not yours)", body = ErrorBody)))]
pub async fn update_wallet(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UpdateWallet>,
) -> AppResult<axum::Json<WalletView>> {
    let p = visible_project(&app, &caller, &name).await?;
    if !caller.can_manage(p.id) {
        return Err(ApiError::Forbidden {
            message: format!("only an owner of project {name} or an administrator may change its wallet"),
        }
        .into());
    }
    let threshold = money("low_threshold", &req.low_threshold)?;
    if threshold.is_negative() {
        return Err(ApiError::invalid("low_threshold", "low_threshold must not be negative").into());
    }
    app.store.set_low_threshold(p.id, threshold.micros()).await?;
    Ok(axum::Json(app.wallet_view(&p).await?))
}

/// Adds money to a project's wallet (administrators), with a note in the ledger.
#[utoipa::path(post, path = "/v1/projects/{project}/wallet/credit", tag = "billing", request_body = CreditWallet,
    params(("project" = String, Path, description = "Project name")),
    responses((status = 200, description = "The wallet after the credit", body = WalletView),
        (status = 400, description = "Bad amount", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 404, description = "No such project", body = ErrorBody)))]
pub async fn credit(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<CreditWallet>,
) -> AppResult<axum::Json<WalletView>> {
    let p = visible_project(&app, &caller, &name).await?;
    caller.require_admin("credit wallets")?;
    let amount = money("amount", &req.amount)?;
    if !amount.is_positive() {
        return Err(ApiError::invalid("amount", "amount must be above zero").into());
    }
    if req.note.as_deref().is_some_and(|n| n.chars().count() > 500) {
        return Err(ApiError::invalid("note", "note must be at most 500 characters").into());
    }
    app.store.credit(p.id, amount.micros(), req.note.as_deref(), Some(caller.user.id)).await.map_err(
        |e| match e {
            sandpit_store::StoreError::InvalidAmount { .. } => AppError::from(ApiError::invalid(
                "amount",
                "the balance would leave the range money can hold",
            )),
            e => e.into(),
        },
    )?;
    tracing::info!(project = %p.name, %amount, by = %caller.user.name, "wallet credited");
    Ok(axum::Json(app.wallet_view(&p).await?))
}

/// Ledger paging.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    /// Only lines with an id above this (the last id of the previous page).
    after_id: Option<i64>,
    /// Page size (1–1000, default 100).
    limit: Option<u32>,
}

fn line_view(l: &LedgerEntry) -> LedgerLineView {
    LedgerLineView {
        id: l.id,
        at: l.at,
        kind: match l.kind {
            LedgerKind::Credit => "credit".into(),
            LedgerKind::Charge => "charge".into(),
        },
        amount: Money::from_micros(l.amount).to_string(),
        sandbox: l.sandbox.map(|s| s.to_string()),
        resource: l.resource.clone(),
        seconds: l.seconds,
        period_from: l.period_from,
        period_to: l.period_to,
        note: l.note.clone(),
    }
}

/// A wallet's append-only ledger of credits and charges, oldest first.
#[utoipa::path(get, path = "/v1/projects/{project}/wallet/ledger", tag = "billing",
    params(("project" = String, Path, description = "Project name"), LedgerQuery),
    responses((status = 200, description = "Ledger lines", body = Vec<LedgerLineView>),
        (status = 404, description = "No such project (or not yours)", body = ErrorBody)))]
pub async fn ledger(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<LedgerQuery>,
) -> AppResult<axum::Json<Vec<LedgerLineView>>> {
    let p = visible_project(&app, &caller, &name).await?;
    let filter = LedgerFilter {
        projects: Some(vec![p.id]),
        after_id: q.after_id,
        limit: Some(q.limit.unwrap_or(100).clamp(1, 1000)),
        ..LedgerFilter::default()
    };
    Ok(axum::Json(app.store.ledger(&filter).await?.iter().map(line_view).collect()))
}

/// What a sandbox of this size costs per hour, running and paused, at this server's rates.
#[utoipa::path(post, path = "/v1/estimate", tag = "billing", request_body = EstimateRequest,
    responses((status = 200, description = "Hourly prices", body = EstimateView),
        (status = 400, description = "Bad spec", body = ErrorBody)))]
pub async fn estimate(
    State(app): State<Arc<App>>,
    _caller: Caller,
    ApiJson(req): ApiJson<EstimateRequest>,
) -> AppResult<axum::Json<EstimateView>> {
    Ok(axum::Json(app.estimate(&req)?))
}

/// `GET /v1/billing/usage` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// Start: a date (`2026-11-01`, midnight UTC) or an RFC 3339 time; inclusive [default: 30 days before `to`].
    from: Option<String>,
    /// End: a date or an RFC 3339 time; exclusive [default: now].
    to: Option<String>,
    /// Only this project [default: every project the caller can see].
    project: Option<String>,
    /// `json` (default) or `csv`: one row per charge line.
    format: Option<String>,
}

/// An RFC 3339 time, or a date (`2026-11-01`: its midnight UTC).
fn parse_time(field: &str, s: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| {
            time::Date::parse(s, &time::format_description::well_known::Iso8601::DATE)
                .map(|d| d.midnight().assume_utc())
        })
        .map_err(|_| {
            ApiError::invalid(
                field,
                format!(
                    "{field} must be a date like 2026-11-01 or an RFC 3339 time like 2026-11-01T00:00:00Z"
                ),
            )
        })
}

/// Spending in a time range by resource (gpu, cpu, memory, storage), by sandbox, by project and
/// by UTC day, each adding up to the total; or, with `format=csv`, every charge line. Usage is
/// counted by when it happened (a line's period start).
#[utoipa::path(get, path = "/v1/billing/usage", tag = "billing", params(UsageParams),
    responses((status = 200, description = "The breakdown, or CSV",
            content((UsageView = "application/json"), (String = "text/csv"))),
        (status = 400, description = "Bad range or format", body = ErrorBody),
        (status = 404, description = "No such project (or not yours)", body = ErrorBody)))]
pub async fn usage(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UsageParams>,
) -> AppResult<Response> {
    let to = match &q.to {
        Some(t) => parse_time("to", t)?,
        None => OffsetDateTime::now_utc(),
    };
    let from = match &q.from {
        Some(f) => parse_time("from", f)?,
        None => to - time::Duration::days(30),
    };
    if from >= to {
        return Err(ApiError::invalid("from", "from must be before to").into());
    }
    if to - from > time::Duration::days(MAX_USAGE_DAYS) {
        return Err(ApiError::invalid("from", format!("a range covers at most {MAX_USAGE_DAYS} days")).into());
    }
    let projects = match &q.project {
        Some(name) => Some(vec![visible_project(&app, &caller, name).await?.id]),
        None => caller.visible_projects(),
    };
    let lines = app.charge_lines(projects, from, to).await?;
    match q.format.as_deref() {
        None | Some("json") => Ok(axum::Json(app.usage_view(&lines, from, to).await?).into_response()),
        Some("csv") => {
            let mut names = std::collections::BTreeMap::new();
            for p in app.store.list_projects().await? {
                names.insert(p.id, p.name);
            }
            let mut w = csv::Writer::from_writer(Vec::new());
            let header = [
                "id",
                "project",
                "sandbox",
                "resource",
                "seconds",
                "period_from",
                "period_to",
                "amount",
                "currency",
            ];
            w.write_record(header).map_err(|e| AppError::internal("csv", &e))?;
            let fmt = |t: Option<OffsetDateTime>| t.and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default();
            for l in &lines {
                w.write_record([
                    l.id.to_string(),
                    names.get(&l.project).cloned().unwrap_or_default(),
                    l.sandbox.map(|s| s.to_string()).unwrap_or_default(),
                    l.resource.clone().unwrap_or_default(),
                    l.seconds.map(|s| s.to_string()).unwrap_or_default(),
                    fmt(l.period_from),
                    fmt(l.period_to),
                    Money::from_micros(l.amount).to_string(),
                    app.config.billing.currency.clone(),
                ])
                .map_err(|e| AppError::internal("csv", &e))?;
            }
            let body = w.into_inner().map_err(|e| AppError::internal("csv", &e))?;
            Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
        }
        Some(other) => {
            Err(ApiError::invalid("format", format!("format must be json or csv, not {other:?}")).into())
        }
    }
}
