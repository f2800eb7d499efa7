//! Credentials of every dialect, one account model: `x-api-key` / `api-secret` carry a key's
//! secret; `Authorization` carries a VideoSDK JWT (HS256 signed with the secret, claims `apikey`
//! and `exp`; `Bearer ` optional) or, failing the JWT shape, a secret.

use actix_web::HttpRequest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::accounts::Principal;

#[derive(Debug, Deserialize)]
struct VideoSdkClaims {
    apikey: String,
    #[allow(dead_code)]
    exp: u64,
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

pub async fn authenticate(req: &HttpRequest, state: &AppState) -> ApiResult<Principal> {
    if let Some(secret) = header(req, "x-api-key").or_else(|| header(req, "api-secret")) {
        return by_secret(state, secret).await;
    }
    if let Some(value) = header(req, "authorization") {
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .unwrap_or(value)
            .trim();
        return if token.split('.').count() == 3 {
            by_jwt(state, token).await
        } else {
            by_secret(state, token).await
        };
    }
    Err(ApiError::unauthorized("Missing credentials: send an API key in x-api-key (or api-secret), or a JWT in Authorization."))
}

async fn by_secret(state: &AppState, secret: &str) -> ApiResult<Principal> {
    state
        .store
        .authenticate_secret(secret)
        .await?
        .ok_or_else(|| ApiError::unauthorized("Invalid API key."))
}

async fn by_jwt(state: &AppState, token: &str) -> ApiResult<Principal> {
    let invalid = |why: &str| ApiError::unauthorized(format!("Invalid token: {why}."));
    // The key id is read before verification only to find the secret to verify with.
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| invalid("malformed"))?;
    let claims: serde_json::Value = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| invalid("malformed"))?;
    let key_id = claims
        .get("apikey")
        .and_then(|v| v.as_str())
        .ok_or_else(|| invalid("no apikey claim"))?;
    let (principal, secret) = state
        .store
        .key_secret(key_id)
        .await?
        .ok_or_else(|| invalid("unknown apikey"))?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = state.settings.security.jwt_leeway_seconds;
    validation.set_required_spec_claims(&["exp"]);
    validation.validate_aud = false;
    let verified = decode::<VideoSdkClaims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::ExpiredSignature => invalid("expired"),
            ErrorKind::InvalidSignature => invalid("bad signature"),
            ErrorKind::InvalidAlgorithm => invalid("algorithm must be HS256"),
            _ => invalid("could not be verified"),
        }
    })?;
    if verified.claims.apikey != principal.key_id {
        return Err(invalid("apikey mismatch"));
    }
    Ok(principal)
}
