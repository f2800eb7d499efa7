//! The preview channel: one task per WebSocket connection, sending the session's media as binary
//! messages (`0x01` + a JPEG frame, `0x02` + a PCM chunk: s16le, 16 kHz, mono) and its metadata
//! and events as JSON text. It is the simplest media sink, for tools and tests. A client that reads
//! too slowly skips frames and chunks (media is live, not a backlog); its session's events come
//! through the same bounded channel as the control channel's.

use actix_ws::{AggregatedMessage, CloseCode, Session as Socket};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use super::relay::{Frame, Remote};
use super::{close_reason, next_id, protocol, Heartbeat};
use crate::actors::registry::LiveSession;
use crate::actors::session::messages::{MediaStreams, Outbound, Subscribe, Unsubscribe};
use crate::media::Want;
use crate::state::AppState;

pub use super::protocol::{audio_message, hello, video_message, AUDIO, VIDEO};

/// What a preview client sent: answered (a pong, or a refusal: the preview takes no commands);
/// false once the channel should close (`close` says why).
async fn from_client(
    message: Option<Result<AggregatedMessage, actix_ws::ProtocolError>>,
    socket: &mut Socket,
    close: &mut Option<actix_ws::CloseReason>,
) -> bool {
    match message {
        Some(Ok(AggregatedMessage::Ping(bytes))) => socket.pong(&bytes).await.is_ok(),
        Some(Ok(AggregatedMessage::Text(_) | AggregatedMessage::Binary(_))) => {
            let refusal = json!({"type": "error", "code": "read_only", "message": "The preview channel takes no commands: use /control."});
            socket.text(refusal.to_string()).await.is_ok()
        }
        Some(Ok(AggregatedMessage::Pong(_))) => true,
        Some(Ok(AggregatedMessage::Close(reason))) => {
            *close = reason;
            false
        }
        Some(Err(_)) | None => false,
    }
}

/// The upgrade of `req` to a preview channel: the client sends little (pings, a close).
fn upgrade(
    req: &actix_web::HttpRequest,
    payload: actix_web::web::Payload,
) -> Result<
    (
        actix_web::HttpResponse,
        Socket,
        actix_ws::AggregatedMessageStream,
    ),
    actix_web::Error,
> {
    let (response, socket, stream) = actix_ws::handle(req, payload)?;
    let stream = stream
        .max_frame_size(64 * 1024)
        .aggregate_continuations()
        .max_continuation_size(64 * 1024);
    Ok((response, socket, stream))
}

/// Pings the client; false (and `close` says why) once it has been silent too long.
async fn beat(
    heartbeat: &Heartbeat,
    socket: &mut Socket,
    close: &mut Option<actix_ws::CloseReason>,
) -> bool {
    let alive = heartbeat.beat(socket, "preview").await;
    if !alive {
        *close = close_reason(CloseCode::Policy, "heartbeat timeout");
    }
    alive
}

/// Starts a preview channel on `req` for a session another node runs: its node relays the media
/// and events (`super::relay`), `hello` first.
pub fn start_relayed(
    remote: Remote,
    hello: Option<serde_json::Value>,
    state: AppState,
    req: &actix_web::HttpRequest,
    payload: actix_web::web::Payload,
) -> Result<actix_web::HttpResponse, actix_web::Error> {
    let (response, socket, stream) = upgrade(req, payload)?;
    actix_web::rt::spawn(run_relayed(remote, hello, state, socket, stream));
    Ok(response)
}

async fn run_relayed(
    mut remote: Remote,
    hello: Option<serde_json::Value>,
    state: AppState,
    mut socket: Socket,
    mut stream: actix_ws::AggregatedMessageStream,
) {
    let metrics = state.metrics.clone();
    metrics.ws_connections.with_label_values(&["preview"]).inc();
    let mut heartbeat = Heartbeat::new(&state.settings.ws);
    let mut close = close_reason(CloseCode::Normal, "session ended");
    let hello = hello.unwrap_or_default().to_string();
    let mut open = socket.text(hello).await.is_ok();
    while open {
        open = tokio::select! {
            frame = remote.next() => match frame {
                Frame::Text { text, .. } => socket.text(text).await.is_ok(),
                Frame::Binary(message) => socket.binary(message).await.is_ok(),
                Frame::Close(reason) => {
                    close = reason;
                    false
                }
            },
            message = stream.next() => {
                heartbeat.heard();
                from_client(message, &mut socket, &mut close).await
            },
            _ = heartbeat.tick() => beat(&heartbeat, &mut socket, &mut close).await,
        };
    }
    metrics.ws_connections.with_label_values(&["preview"]).dec();
    let _ = socket.close(close).await;
}

/// Starts a preview channel on `req` (the upgrade is already authorised by the caller).
pub fn start(
    live: LiveSession,
    streams: MediaStreams,
    state: AppState,
    req: &actix_web::HttpRequest,
    payload: actix_web::web::Payload,
) -> Result<actix_web::HttpResponse, actix_web::Error> {
    let (response, socket, stream) = upgrade(req, payload)?;
    actix_web::rt::spawn(run(live, streams, state, socket, stream));
    Ok(response)
}

async fn run(
    live: LiveSession,
    streams: MediaStreams,
    state: AppState,
    mut socket: Socket,
    mut stream: actix_ws::AggregatedMessageStream,
) {
    let metrics = state.metrics.clone();
    metrics.ws_connections.with_label_values(&["preview"]).inc();
    // The renderer encodes JPEG for as long as this lives.
    let _jpeg = Want::jpeg(&streams.wants);
    let hello = hello(&live.session_id, &streams);
    let id = next_id();
    let (events_tx, mut inbox) = mpsc::channel(state.settings.ws.mailbox_capacity.max(1));
    // Status and events as text; the preview counts as a present client of its session.
    let subscribe = Subscribe {
        subscriber: id,
        sender: events_tx,
        owns: true,
    };
    let mut open = socket.text(hello.to_string()).await.is_ok()
        && matches!(live.addr.send(subscribe).await, Ok(Ok(())));
    let (mut frames, mut audio) = (streams.frames, streams.audio);
    let mut heartbeat = Heartbeat::new(&state.settings.ws);
    let mut close = close_reason(CloseCode::Normal, "session ended");
    // The media channels close when the session stops; its last status still comes on `inbox`,
    // followed by `Close`.
    let (mut video_on, mut audio_on) = (true, true);
    while open {
        open = tokio::select! {
            frame = frames.recv(), if video_on => match frame {
                Ok(frame) => match &frame.jpeg {
                    Some(jpeg) => socket.binary(video_message(jpeg)).await.is_ok(),
                    // Drawn before this preview's claim reached the renderer.
                    None => true,
                },
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    metrics.preview_dropped.with_label_values(&["video"]).inc_by(n);
                    true
                }
                Err(broadcast::error::RecvError::Closed) => {
                    video_on = false;
                    true
                }
            },
            chunk = audio.recv(), if audio_on => match chunk {
                Ok(chunk) => socket.binary(audio_message(&chunk.pcm)).await.is_ok(),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    metrics.preview_dropped.with_label_values(&["audio"]).inc_by(n);
                    true
                }
                Err(broadcast::error::RecvError::Closed) => {
                    audio_on = false;
                    true
                }
            },
            outbound = inbox.recv() => match outbound {
                Some(Outbound::Event(event)) => {
                    socket.text(protocol::event_frame(&event).to_string()).await.is_ok()
                }
                Some(Outbound::Close) => false,
                None => {
                    close = close_reason(CloseCode::Policy, "too slow");
                    false
                }
            },
            message = stream.next() => {
                heartbeat.heard();
                from_client(message, &mut socket, &mut close).await
            },
            _ = heartbeat.tick() => beat(&heartbeat, &mut socket, &mut close).await,
        };
    }
    metrics.ws_connections.with_label_values(&["preview"]).dec();
    live.addr.do_send(Unsubscribe { subscriber: id });
    let _ = socket.close(close).await;
}
