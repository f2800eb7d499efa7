//! The local room over WebRTC, WHEP-style (API.md, "Room page, local WebRTC and console"): a
//! browser POSTs its SDP offer with the session's participant token (or the API key) and gets
//! `201` with the answer and a `Location` for its viewer; `PATCH` there is trickle ICE, `DELETE`
//! leaves. The session's Room child owns the media; this file only speaks HTTP.
//!
//! Any node answers: a request for a session whose actor runs on another node goes there over the
//! cluster (topic `rtc`), and that node's media engine answers it (its ICE candidates carry its own
//! `media.public_ip`), so one address in front of several nodes serves every room page. A node
//! that does not answer is `503 unavailable` with `retry_after_seconds`; nothing is held here.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use avs_rtc::{RtcError, ViewerId};
use serde::{Deserialize, Serialize};

use super::control::authorize_session;
use super::error::{ApiError, ApiResult, ErrorBody};
use crate::actors::registry::LiveSession;
use crate::actors::session::viewers::{ViewerError, ViewerLeave, ViewerOffer, ViewerTrickle};
use crate::state::AppState;
use crate::store::entities::session;

/// An SDP offer is a few kilobytes; anything far larger is not one.
const MAX_SDP_BYTES: usize = 64 * 1024;

/// The cluster topic of viewer requests for another node's sessions.
const RTC: &str = "rtc";

/// What a node whose session has no actor here asks the node that runs it.
#[derive(Debug, Serialize, Deserialize)]
struct Call {
    session_id: String,
    request: Request,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Request {
    Offer { sdp: String },
    Trickle { viewer: u64, fragment: String },
    Leave { viewer: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Answered {
    Offer { viewer: u64, sdp: String },
    Trickle,
    Leave { was_there: bool },
}

/// Why a viewer request failed, the same on every node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Refused {
    NotLive,
    NotLocal,
    InvalidSdp {
        why: String,
    },
    UnknownViewer {
        viewer: u64,
    },
    TooManyViewers {
        max: usize,
    },
    /// The media engine failed (logged where it did).
    MediaFailed,
}

impl From<ViewerError> for Refused {
    fn from(e: ViewerError) -> Self {
        match e {
            ViewerError::NotLive | ViewerError::Rtc(RtcError::SessionClosed) => Refused::NotLive,
            ViewerError::NotLocal => Refused::NotLocal,
            // The offer's own problems: the sentence says what is wrong with it.
            ViewerError::Rtc(
                e @ (RtcError::InvalidSdp(_)
                | RtcError::UnsupportedOffer(_)
                | RtcError::InvalidCandidate(_)),
            ) => Refused::InvalidSdp { why: e.to_string() },
            ViewerError::Rtc(RtcError::UnknownViewer(viewer)) => {
                Refused::UnknownViewer { viewer: viewer.0 }
            }
            ViewerError::Rtc(RtcError::TooManyViewers(max)) => Refused::TooManyViewers { max },
            ViewerError::Rtc(other) => {
                tracing::error!(error = %other, "local room media failed");
                Refused::MediaFailed
            }
        }
    }
}

fn not_live() -> ApiError {
    ApiError::conflict("The session is not live: start a new one to watch it.")
}

fn viewer_error(refused: Refused) -> ApiError {
    match refused {
        Refused::NotLive => not_live(),
        Refused::NotLocal => ApiError::conflict(
            "This session's media goes through LiveKit: join its room with the participant token.",
        ),
        Refused::InvalidSdp { why } => {
            ApiError::validation(format!("Invalid value at .sdp: {why}"))
        }
        Refused::UnknownViewer { viewer } => ApiError::not_found(
            "viewer_not_found",
            format!("No viewer `{viewer}` in this session."),
        ),
        Refused::TooManyViewers { max } => ApiError::too_many(
            "no_capacity",
            format!("This session already has its maximum of {max} viewers."),
            5,
        ),
        Refused::MediaFailed => ApiError::unavailable(
            "The media engine cannot take viewers right now; try again shortly.",
        ),
    }
}

/// Carries out `request` on a session whose actor runs on this node.
async fn here(live: &LiveSession, request: Request) -> Result<Answered, Refused> {
    let gone = |_| Refused::NotLive;
    match request {
        Request::Offer { sdp } => {
            let (viewer, sdp) = live.addr.send(ViewerOffer(sdp)).await.map_err(gone)??;
            Ok(Answered::Offer {
                viewer: viewer.0,
                sdp,
            })
        }
        Request::Trickle { viewer, fragment } => {
            let trickle = ViewerTrickle {
                viewer: ViewerId(viewer),
                fragment,
            };
            live.addr.send(trickle).await.map_err(gone)??;
            Ok(Answered::Trickle)
        }
        Request::Leave { viewer } => {
            let was_there = live
                .addr
                .send(ViewerLeave(ViewerId(viewer)))
                .await
                .map_err(gone)??;
            Ok(Answered::Leave { was_there })
        }
    }
}

/// Carries out `request` where the session runs: here, or on its node over the cluster.
async fn on_its_node(
    state: &AppState,
    row: &session::Model,
    request: Request,
) -> ApiResult<Answered> {
    if let Some(live) = state.sessions.live(&row.id).await? {
        return here(&live, request).await.map_err(viewer_error);
    }
    let cluster = match state.sessions.cluster() {
        Some(cluster) if row.ended_at.is_none() && row.node_id != state.sessions.node_id() => {
            cluster
        }
        _ => return Err(not_live()),
    };
    let call = Call {
        session_id: row.id.clone(),
        request,
    };
    let started = std::time::Instant::now();
    let asked = cluster
        .ask::<_, Result<Answered, Refused>>(&row.node_id, RTC, &call)
        .await;
    let outcome = match &asked {
        Ok(Ok(_)) => "ok",
        Ok(Err(_)) => "refused",
        Err(_) => "no_answer",
    };
    state.metrics.forwarded(RTC, outcome, started.elapsed());
    match asked {
        Ok(answered) => answered.map_err(viewer_error),
        Err(e) => {
            tracing::warn!(session = %row.id, node = %row.node_id, error = %e, "viewer request not answered by the session's node");
            let retry = state.settings.sessions.node_lost_after_seconds.clamp(1, 60);
            Err(ApiError {
                retry_after_seconds: Some(retry),
                ..ApiError::unavailable("The session's node does not answer; try again shortly.")
            })
        }
    }
}

/// Answers the viewer requests other nodes forward for this node's sessions, until the cluster
/// connection ends.
pub async fn serve(state: AppState) {
    let Some(cluster) = state.sessions.cluster().cloned() else {
        return;
    };
    cluster
        .serve(RTC, move |call: Call| {
            let state = state.clone();
            async move {
                match state.sessions.live(&call.session_id).await {
                    Ok(Some(live)) => here(&live, call.request).await,
                    _ => Err(Refused::NotLive),
                }
            }
        })
        .await;
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
    let row = authorize_session(&req, &state, &path).await?;
    let sdp = sdp_body(&req, payload, &["application/sdp"]).await?;
    let Answered::Offer { viewer, sdp } = on_its_node(&state, &row, Request::Offer { sdp }).await?
    else {
        return Err(ApiError::internal());
    };
    Ok(HttpResponse::Created()
        .content_type("application/sdp")
        .insert_header((
            header::LOCATION,
            format!("/v1/sessions/{}/rtc/{viewer}", row.id),
        ))
        .body(sdp))
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
    let row = authorize_session(&req, &state, &id).await?;
    let viewer = viewer_id(&viewer)?;
    let fragment = sdp_body(&req, payload, &["application/trickle-ice-sdpfrag"]).await?;
    let request = Request::Trickle {
        viewer: viewer.0,
        fragment,
    };
    on_its_node(&state, &row, request).await?;
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
    let row = authorize_session(&req, &state, &id).await?;
    let viewer = viewer_id(&viewer)?;
    let answered = on_its_node(&state, &row, Request::Leave { viewer: viewer.0 }).await?;
    if !matches!(answered, Answered::Leave { was_there: true }) {
        return Err(viewer_error(Refused::UnknownViewer { viewer: viewer.0 }));
    }
    Ok(HttpResponse::NoContent().finish())
}
