//! `GET /v1/account`: the key's account, its limits and balances; `PATCH` sets its webhook URL.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::authenticate;
use super::body;
use super::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::iso;

async fn render(state: &AppState, account_id: &str) -> ApiResult<HttpResponse> {
    let account = state
        .store
        .account(account_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("Account no longer exists."))?;
    let secret = state.store.webhook_secret(&account).await?;
    Ok(HttpResponse::Ok().json(json!({
        "success": true,
        "account_id": account.id,
        "name": account.name,
        "concurrency_limit": account.concurrency_limit,
        "live_sessions": account.live_sessions,
        "minutes_remaining": account.balance_ms as f64 / 60_000.0,
        "seconds_remaining": account.balance_ms / 1000,
        "credits": account.credits,
        "webhook_url": account.webhook_url,
        "webhook_secret": secret,
        "created_at": iso(account.created_at),
    })))
}

pub async fn get(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    render(&state, &principal.account_id).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    webhook_url: Option<String>,
}

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
