//! Operations: liveness, readiness, Prometheus metrics, and LiveKit's signed webhooks.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::body;
use super::error::{ApiError, ApiResult, ErrorBody};
use crate::actors::render_pool::{DeviceStatus, PoolStatus};
use crate::actors::session::messages::{EndReason, ParticipantJoined, ParticipantLeft, Stop};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`.
    pub status: String,
    /// `ok`.
    pub database: String,
    /// `livekit` or `local`.
    pub rooms: String,
    /// The render devices and their slots.
    pub render: Vec<DeviceStatus>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Received {
    pub success: bool,
}

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "Operations", operation_id = "healthz", security(()),
    responses((status = 200, body = Health, description = "Up.")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
    })
}

/// `GET /readyz`: the database is reachable, migrations are applied, the renderer is loaded.
#[utoipa::path(get, path = "/readyz", tag = "Operations", operation_id = "readyz", security(()),
    responses((status = 200, body = Readiness, description = "Ready.")))]
pub async fn readyz(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    state.store.ready().await.map_err(|e| {
        tracing::warn!(error = %e, "not ready");
        ApiError::unavailable("Not ready: the database is unreachable or migrations are pending.")
    })?;
    // The renderer is loaded when the pool answers with its devices (a worker per device).
    let devices = state
        .render_pool
        .send(PoolStatus)
        .await
        .map_err(|_| ApiError::unavailable("Not ready: the render pool is not running."))?;
    Ok(HttpResponse::Ok().json(Readiness {
        status: "ready".into(),
        database: "ok".into(),
        rooms: if state.rooms.is_livekit() {
            "livekit"
        } else {
            "local"
        }
        .into(),
        render: devices,
    }))
}

/// `GET /metrics`: Prometheus' text format.
#[utoipa::path(get, path = "/metrics", tag = "Operations", operation_id = "metrics", security(()),
    responses((status = 200, description = "Every metric of this process.", content_type = "text/plain; version=0.0.4", body = String)))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// `POST /v1/livekit/webhook`: verified (`Authorization` JWT whose `sha256` claim is the body's
/// digest), then turned into messages to the session that owns the room.
#[utoipa::path(post, path = "/v1/livekit/webhook", tag = "Operations", operation_id = "livekit_webhook",
    security(()),
    params(("Authorization" = String, Header, description = "LiveKit's signed JWT; its `sha256` claim is the body's digest.")),
    request_body(content = Object, content_type = "application/webhook+json", description = "A LiveKit webhook event."),
    responses(
        (status = 200, body = Received, description = "Taken."),
        (status = 401, body = ErrorBody, description = "The signature could not be verified."),
        (status = 404, body = ErrorBody, description = "LiveKit is not configured."),
    ))]
pub async fn livekit_webhook(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let receiver = state.rooms.webhook_receiver().ok_or_else(|| {
        ApiError::not_found("not_found", "LiveKit is not configured on this server.")
    })?;
    let bytes = body::read(payload, 1024 * 1024).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::malformed("Webhook body is not UTF-8."))?;
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("Missing Authorization header."))?;
    let auth = auth.strip_prefix("Bearer ").unwrap_or(auth);
    let event = receiver.receive(text, auth).map_err(|e| {
        tracing::warn!(error = %e, "LiveKit webhook refused");
        ApiError::unauthorized("Webhook signature could not be verified.")
    })?;
    let room = event
        .room
        .as_ref()
        .map(|r| r.name.clone())
        .unwrap_or_default();
    let live = state.sessions.in_room(&room).await?;
    if let Some(live) = live {
        let identity = event
            .participant
            .as_ref()
            .map(|p| p.identity.clone())
            .unwrap_or_default();
        match event.event.as_str() {
            "participant_joined" => live.addr.do_send(ParticipantJoined { identity }),
            "participant_left" => live.addr.do_send(ParticipantLeft { identity }),
            "room_finished" => live.addr.do_send(Stop(EndReason::RoomClosed)),
            _ => {}
        }
    }
    Ok(HttpResponse::Ok().json(Received { success: true }))
}
