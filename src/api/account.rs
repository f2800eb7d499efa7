//! `GET /v1/account`: the key's account, its limits and balances; `PATCH` sets its webhook URL.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::authenticate;
use super::body;
use super::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::iso;

/// The key's account, its limits and balances.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub success: bool,
    pub account_id: String,
    pub name: String,
    pub concurrency_limit: i64,
    pub live_sessions: i64,
    pub minutes_remaining: f64,
    pub seconds_remaining: i64,
    /// Agent generation costs 250.
    pub credits: i64,
    pub webhook_url: Option<String>,
    /// Signs outbound webhooks (`x-webhook-signature`).
    pub webhook_secret: String,
    pub created_at: String,
}

async fn render(state: &AppState, account_id: &str) -> ApiResult<HttpResponse> {
    let account = state
        .store
        .account(account_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("Account no longer exists."))?;
    let secret = state.store.webhook_secret(&account).await?;
    Ok(HttpResponse::Ok().json(AccountView {
        success: true,
        account_id: account.id,
        name: account.name,
        concurrency_limit: account.concurrency_limit,
        live_sessions: account.live_sessions,
        minutes_remaining: account.balance_ms as f64 / 60_000.0,
        seconds_remaining: account.balance_ms / 1000,
        credits: account.credits,
        webhook_url: account.webhook_url,
        webhook_secret: secret,
        created_at: iso(account.created_at),
    }))
}

/// `GET /v1/account`.
#[utoipa::path(get, path = "/v1/account", tag = "Account", operation_id = "get_account",
    responses((status = 200, body = AccountView, description = "The key's account.")))]
pub async fn get(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    render(&state, &principal.account_id).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateAccountRequest)]
struct PatchBody {
    /// Where the account's webhooks go; empty or null removes it.
    webhook_url: Option<String>,
}

/// `PATCH /v1/account`: sets the account's webhook URL.
#[utoipa::path(patch, path = "/v1/account", tag = "Account", operation_id = "update_account",
    request_body = PatchBody,
    responses((status = 200, body = AccountView, description = "The account, changed.")))]
pub async fn patch(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    let body: PatchBody = body::json(payload, 16 * 1024).await?;
    let url = match body.webhook_url.filter(|u| !u.is_empty()) {
        Some(u) => {
            state
                .policy
                .parse(&u)
                .map_err(|why| ApiError::invalid_field("webhook_url", why))?;
            Some(u)
        }
        None => None,
    };
    state
        .store
        .set_account_webhook(&principal.account_id, url)
        .await?;
    render(&state, &principal.account_id).await
}
