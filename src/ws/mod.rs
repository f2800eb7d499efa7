//! The WebSocket boundary: frames and their validation, and the channel actors.

pub mod control;
pub mod preview;
pub mod protocol;

use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws;

use crate::config::WsSettings;

/// A channel actor that remembers when its client was last heard from.
pub trait Heard: Actor<Context = ws::WebsocketContext<Self>> {
    fn last_heard(&self) -> Instant;
}

/// What every channel does on start: bounds its mailbox (a slow reader's fills up, and it is
/// dropped), and pings its client every interval, closing it once it has been silent too long.
pub fn keep_alive<A: Heard>(
    ctx: &mut ws::WebsocketContext<A>,
    settings: &WsSettings,
    channel: &'static str,
) {
    ctx.set_mailbox_capacity(settings.mailbox_capacity);
    let timeout = Duration::from_millis(settings.client_timeout_ms);
    ctx.run_interval(
        Duration::from_millis(settings.heartbeat_interval_ms),
        move |act, ctx| {
            if act.last_heard().elapsed() > timeout {
                tracing::info!(channel, "dropping a silent channel client");
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Policy,
                    description: Some("heartbeat timeout".into()),
                }));
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        },
    );
}
