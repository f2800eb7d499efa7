//! The preview channel: one actor per WebSocket connection, sending the session's media as binary
//! messages (`0x01` + a JPEG frame, `0x02` + a PCM chunk: s16le, 16 kHz, mono) and its metadata
//! and events as JSON text. It is the media path of the local room and what a session page plays.
//! A client that reads too slowly skips frames and chunks (media is live, not a backlog); its
//! session's events come through the same bounded mailbox as the control channel's.

use std::time::Instant;

use actix::prelude::*;
use actix_web_actors::ws;
use serde_json::json;
use tokio::sync::broadcast;

use crate::actors::registry::LiveSession;
use crate::actors::session::messages::{MediaStreams, Outbound, Subscribe, Unsubscribe};
use crate::media::VideoFrame;
use crate::state::AppState;
use crate::voice::{PcmChunk, SAMPLE_RATE};

pub const VIDEO: u8 = 0x01;
pub const AUDIO: u8 = 0x02;

enum Media {
    Frame(VideoFrame),
    Audio(PcmChunk),
    Skipped(&'static str, u64),
}

pub struct PreviewSocket {
    live: LiveSession,
    streams: Option<MediaStreams>,
    state: AppState,
    id: u64,
    last_heard: Instant,
}

impl PreviewSocket {
    pub fn new(live: LiveSession, streams: MediaStreams, state: AppState) -> Self {
        Self {
            live,
            streams: Some(streams),
            state,
            id: super::control::next_id(),
            last_heard: Instant::now(),
        }
    }
}

/// A broadcast receiver as a stream of media; lagging shows up as one `Skipped`.
fn media_stream<T: Clone + Send + 'static>(
    rx: broadcast::Receiver<T>,
    wrap: fn(T) -> Media,
    kind: &'static str,
) -> impl futures_util::Stream<Item = Media> {
    futures_util::stream::unfold(rx, move |mut rx| async move {
        match rx.recv().await {
            Ok(item) => Some((wrap(item), rx)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some((Media::Skipped(kind, n), rx)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}

impl super::Heard for PreviewSocket {
    fn last_heard(&self) -> Instant {
        self.last_heard
    }
}

impl Actor for PreviewSocket {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        super::keep_alive(ctx, &self.state.settings.ws, "preview");
        self.state
            .metrics
            .ws_connections
            .with_label_values(&["preview"])
            .inc();
        let Some(streams) = self.streams.take() else {
            return;
        };
        ctx.text(
            json!({
                "type": "preview",
                "session_id": self.live.session_id,
                "video": streams.video,
                "audio": {"sample_rate": SAMPLE_RATE, "channels": 1, "format": "s16le"},
                "binary": {"0x01": "jpeg frame", "0x02": "pcm chunk"},
            })
            .to_string(),
        );
        ctx.add_stream(media_stream(streams.frames, Media::Frame, "video"));
        ctx.add_stream(media_stream(streams.audio, Media::Audio, "audio"));
        // Status and events as text; the preview counts as a present client of its session.
        let subscribe = Subscribe {
            subscriber: self.id,
            recipient: ctx.address().recipient(),
            owns: true,
        };
        ctx.wait(
            self.live
                .addr
                .send(subscribe)
                .into_actor(self)
                .map(|reply, _, ctx| {
                    if !matches!(reply, Ok(Ok(()))) {
                        ctx.close(Some(ws::CloseCode::Normal.into()));
                        ctx.stop();
                    }
                }),
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.state
            .metrics
            .ws_connections
            .with_label_values(&["preview"])
            .dec();
        self.live.addr.do_send(Unsubscribe {
            subscriber: self.id,
        });
    }
}

impl StreamHandler<Media> for PreviewSocket {
    fn handle(&mut self, media: Media, ctx: &mut Self::Context) {
        match media {
            Media::Frame(frame) => {
                let mut message = Vec::with_capacity(frame.jpeg.len() + 1);
                message.push(VIDEO);
                message.extend_from_slice(&frame.jpeg);
                ctx.binary(message);
            }
            Media::Audio(chunk) => {
                let mut message = Vec::with_capacity(chunk.len() * 2 + 1);
                message.push(AUDIO);
                for s in chunk.iter() {
                    message.extend_from_slice(&s.to_le_bytes());
                }
                ctx.binary(message);
            }
            Media::Skipped(kind, n) => {
                self.state
                    .metrics
                    .preview_dropped
                    .with_label_values(&[kind])
                    .inc_by(n);
            }
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // One media stream ended (the session is gone); `Outbound::Close` closes the socket.
    }
}

impl Handler<Outbound> for PreviewSocket {
    type Result = ();

    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        match msg {
            Outbound::Frame(text) => ctx.text(&*text),
            Outbound::Close => {
                ctx.close(Some(ws::CloseCode::Normal.into()));
                ctx.stop();
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for PreviewSocket {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match msg {
            Ok(ws::Message::Ping(bytes)) => ctx.pong(&bytes),
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(ws::Message::Text(_)) | Ok(ws::Message::Binary(_)) => ctx.text(
                json!({"type": "error", "code": "read_only", "message": "The preview channel takes no commands: use /control."})
                    .to_string(),
            ),
            Ok(_) => {}
            Err(_) => ctx.stop(),
        }
    }
}

/// Starts a preview channel on `req` (the upgrade is already authorised by the caller).
pub fn start(
    live: LiveSession,
    streams: MediaStreams,
    state: AppState,
    req: &actix_web::HttpRequest,
    payload: actix_web::web::Payload,
) -> Result<actix_web::HttpResponse, actix_web::Error> {
    ws::WsResponseBuilder::new(PreviewSocket::new(live, streams, state), req, payload)
        .frame_size(64 * 1024)
        .start()
}
