//! The local room over WebRTC, WHEP-style (API.md, "Room page, local WebRTC and console"): a
//! browser POSTs its SDP offer with the session's participant token (or the API key) and gets
//! `201` with the answer and a `Location` for its viewer; `PATCH` there is trickle ICE, `DELETE`
//! leaves. The session's Room child owns the media; this file only speaks HTTP.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use avs_rtc::{RtcError, ViewerId};

use super::control::authorize_session;
use super::error::{ApiError, ApiResult, ErrorBody};
use crate::actors::session::viewers::{ViewerError, ViewerLeave, ViewerOffer, ViewerTrickle};
use crate::state::AppState;

/// An SDP offer is a few kilobytes; anything far larger is not one.
const MAX_SDP_BYTES: usize = 64 * 1024;

fn viewer_error(e: ViewerError) -> ApiError {
    match e {
        ViewerError::NotLive => {
            ApiError::conflict("The session is not live: start a new one to watch it.")
        }
        ViewerError::NotLocal => ApiError::conflict(
            "This session's media goes through LiveKit: join its room with the participant token.",
        ),
        ViewerError::Rtc(e) => match e {
            // The offer's own problems: the sentence says what is wrong with it.
            RtcError::InvalidSdp(_)
            | RtcError::UnsupportedOffer(_)
            | RtcError::InvalidCandidate(_) => {
                ApiError::validation(format!("Invalid value at .sdp: {e}"))
            }
            RtcError::UnknownViewer(viewer) => ApiError::not_found(
                "viewer_not_found",
                format!("No viewer `{viewer}` in this session."),
            ),
            RtcError::TooManyViewers(n) => ApiError::too_many(
                "no_capacity",
                format!("This session already has its maximum of {n} viewers."),
                5,
            ),
            RtcError::SessionClosed => {
                ApiError::conflict("The session is not live: start a new one to watch it.")
            }
            other => {
                tracing::error!(error = %other, "local room media failed");
                ApiError::unavailable(
                    "The media engine cannot take viewers right now; try again shortly.",
                )
            }
        },
    }
}

async fn sdp_body(req: &HttpRequest, payload: web::Payload, kinds: &[&str]) -> ApiResult<String> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !kinds.contains(&content_type.as_str()) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "validation_error",
            format!("The body must be {}.", kinds.join(" or ")),
        ));
    }
    let bytes = super::body::read(payload, MAX_SDP_BYTES).await?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::malformed("The body is not UTF-8 text."))
}

async fn live_session(
    state: &AppState,
    req: &HttpRequest,
    id: &str,
) -> ApiResult<crate::actors::registry::LiveSession> {
    let row = authorize_session(req, state, id).await?;
    state
        .sessions
        .live(&row.id)
        .await?
        .ok_or_else(|| ApiError::conflict("The session is not live: start a new one to watch it."))
}

/// `POST /v1/sessions/{id}/rtc`: a new viewer.
#[utoipa::path(post, path = "/v1/sessions/{id}/rtc", tag = "Local room", operation_id = "rtc_offer",
    security(("participant_token" = []), ("api_key" = []), ("api_secret" = []), ("jwt" = [])),
    params(("id" = String, Path, description = "The session's id.")),
    request_body(content = String, content_type = "application/sdp", description = "The browser's SDP offer: receives video and audio, may send its microphone."),
    responses(
        (status = 201, description = "The SDP answer.", content_type = "application/sdp", body = String,
            headers(("Location" = String, description = "The viewer: PATCH there for trickle ICE, DELETE to leave."))),
        (status = 404, body = ErrorBody, description = "`session_not_found`."),
        (status = 409, body = ErrorBody, description = "`conflict`: the session is not live, or its media goes through LiveKit."),
        (status = 415, body = ErrorBody, description = "The body is not application/sdp."),
        (status = 429, body = ErrorBody, description = "`no_capacity`: the session has its maximum of viewers."),
    ))]
pub async fn offer(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let live = live_session(&state, &req, &path).await?;
    let sdp = sdp_body(&req, payload, &["application/sdp"]).await?;
    let (viewer, answer) = live
        .addr
        .send(ViewerOffer(sdp))
        .await
        .map_err(|_| ApiError::conflict("The session is not live: start a new one to watch it."))?
        .map_err(viewer_error)?;
    Ok(HttpResponse::Created()
        .content_type("application/sdp")
        .insert_header((
            header::LOCATION,
            format!("/v1/sessions/{}/rtc/{viewer}", live.session_id),
        ))
        .body(answer))
}

fn viewer_id(raw: &str) -> ApiResult<ViewerId> {
    raw.parse().map_err(|_| {
        ApiError::not_found(
            "viewer_not_found",
            format!("No viewer `{raw}` in this session."),
        )
    })
}

/// `PATCH /v1/sessions/{id}/rtc/{viewer}`: trickle ICE.
#[utoipa::path(patch, path = "/v1/sessions/{id}/rtc/{viewer}", tag = "Local room", operation_id = "rtc_trickle",
    security(("participant_token" = []), ("api_key" = []), ("api_secret" = []), ("jwt" = [])),
    params(("id" = String, Path, description = "The session's id."), ("viewer" = String, Path, description = "The viewer, from `Location`.")),
    request_body(content = String, content_type = "application/trickle-ice-sdpfrag", description = "ICE candidates."),
    responses(
        (status = 204, description = "Taken."),
        (status = 404, body = ErrorBody, description = "`session_not_found` or `viewer_not_found`."),
        (status = 409, body = ErrorBody, description = "`conflict`: the session is not live."),
    ))]
pub async fn trickle(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let (id, viewer) = path.into_inner();
    let live = live_session(&state, &req, &id).await?;
    let viewer = viewer_id(&viewer)?;
    let fragment = sdp_body(&req, payload, &["application/trickle-ice-sdpfrag"]).await?;
    live.addr
        .send(ViewerTrickle { viewer, fragment })
        .await
        .map_err(|_| ApiError::conflict("The session is not live: start a new one to watch it."))?
        .map_err(viewer_error)?;
    Ok(HttpResponse::NoContent().finish())
}

/// `DELETE /v1/sessions/{id}/rtc/{viewer}`: the viewer leaves.
#[utoipa::path(delete, path = "/v1/sessions/{id}/rtc/{viewer}", tag = "Local room", operation_id = "rtc_leave",
    security(("participant_token" = []), ("api_key" = []), ("api_secret" = []), ("jwt" = [])),
    params(("id" = String, Path, description = "The session's id."), ("viewer" = String, Path, description = "The viewer, from `Location`.")),
    responses(
        (status = 204, description = "Gone."),
        (status = 404, body = ErrorBody, description = "`session_not_found` or `viewer_not_found`."),
        (status = 409, body = ErrorBody, description = "`conflict`: the session is not live."),
    ))]
pub async fn leave(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (id, viewer) = path.into_inner();
    let live = live_session(&state, &req, &id).await?;
    let viewer = viewer_id(&viewer)?;
    let was_there = live
        .addr
        .send(ViewerLeave(viewer))
        .await
        .map_err(|_| ApiError::conflict("The session is not live: start a new one to watch it."))?
        .map_err(viewer_error)?;
    if !was_there {
        return Err(viewer_error(ViewerError::Rtc(RtcError::UnknownViewer(
            viewer,
        ))));
    }
    Ok(HttpResponse::NoContent().finish())
}
