//! The WebSocket boundary (actix-ws): frames and their validation (`protocol`), and one task per
//! connection for the control and preview channels. A connection's task owns its socket and a
//! bounded channel its sessions send events into; a reader too slow to drain it is dropped by the
//! session (the channel fills), a silent client by the heartbeat.

pub mod control;
pub mod preview;
pub mod protocol;
pub mod relay;

use std::time::{Duration, Instant};

use actix_ws::{CloseCode, CloseReason, Session as Socket};

use crate::config::WsSettings;

/// The server's side of the heartbeat: a ping every interval, and a verdict on a silent client.
pub struct Heartbeat {
    interval: tokio::time::Interval,
    timeout: Duration,
    last_heard: Instant,
}

impl Heartbeat {
    pub fn new(settings: &WsSettings) -> Self {
        let period = Duration::from_millis(settings.heartbeat_interval_ms.max(1));
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            interval,
            timeout: Duration::from_millis(settings.client_timeout_ms),
            last_heard: Instant::now(),
        }
    }

    /// Anything from the client counts as a sign of life.
    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    pub async fn tick(&mut self) {
        self.interval.tick().await;
    }

    /// Pings the client, or answers false once it has been silent too long.
    pub async fn beat(&self, socket: &mut Socket, channel: &'static str) -> bool {
        if self.last_heard.elapsed() > self.timeout {
            tracing::info!(channel, "dropping a silent channel client");
            return false;
        }
        socket.ping(b"").await.is_ok()
    }
}

pub fn close_reason(code: CloseCode, description: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code,
        description: Some(description.to_string()),
    })
}

/// A process-wide id for channel subscriptions.
pub fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
