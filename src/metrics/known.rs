//! Every label value known before anything happens, at zero, so each family is exported from the
//! first scrape (Prometheus' instrumentation guidance): dashboards and alerts read 0 rather than
//! "no data", and `rate()` sees the first increment.

use prometheus::IntCounterVec;

use super::Metrics;

impl Metrics {
    /// Called once, by `Metrics::new`.
    pub(super) fn zero_known_labels(&self) {
        use crate::domain::session::{ChildKind, EndReason};
        // A family with one label, each of `values` at zero.
        let one = |family: &IntCounterVec, values: &[&str]| {
            for value in values {
                family.with_label_values(&[value]);
            }
        };
        one(
            &self.sessions_started,
            &["api", "link", "connect", "deployment"],
        );
        for reason in EndReason::ALL {
            self.sessions_ended.with_label_values(&[reason.as_str()]);
        }
        one(&self.orphans_ended, &["shutdown", "node_lost"]);
        one(
            &self.admissions_rejected,
            &[
                "concurrency_limit",
                "insufficient_balance",
                "link_inactive",
                "account_gone",
                "no_capacity",
                "busy",
            ],
        );
        for child in ChildKind::ALL {
            self.child_restarts.with_label_values(&[child.as_str()]);
        }
        one(&self.webhook_deliveries, &["delivered", "retry", "gave_up"]);
        one(&self.agent_generations, &["ready", "failed"]);
        one(&self.fanout_deliveries, &["ws", "speak", "add_context"]);
        one(&self.preview_dropped, &["audio", "video"]);
        one(&self.billing_settlements, &["checkpoint", "final"]);
        one(&self.billing_failures, &["checkpoint", "endings"]);
        one(
            &self.livekit_agent_streams,
            &["accepted", "not_the_agent", "no_format", "bad_format"],
        );
        one(
            &self.link_start_failures,
            &[
                "link_not_found",
                "link_inactive",
                "insufficient_balance",
                "concurrency_limit",
            ],
        );
        for (method, direction, outcome) in [
            ("lk.clear_buffer", "received", "ok"),
            ("lk.clear_buffer", "received", "error"),
            ("lk.playback_started", "sent", "ok"),
            ("lk.playback_finished", "sent", "ok"),
            ("lk.playback_finished", "sent", "error"),
        ] {
            self.livekit_rpc
                .with_label_values(&[method, direction, outcome]);
        }
        for kind in ["stop", "deliver", "start", "rtc"] {
            self.cluster_forward_seconds.with_label_values(&[kind]);
            for outcome in ["ok", "refused", "no_answer"] {
                self.cluster_forwards.with_label_values(&[kind, outcome]);
            }
        }
        for channel in ["session", "agent", "preview"] {
            self.ws_connections.with_label_values(&[channel]);
        }
        for command in ["speak", "add_context", "interrupt", "stop", "ping"] {
            self.control_ack.with_label_values(&[command]);
            self.ws_frames.with_label_values(&["in", command]);
        }
        for kind in ["checkpoint", "final"] {
            self.billing_write_seconds.with_label_values(&[kind]);
        }
        for by in ["ip", "key"] {
            self.rate_limited.with_label_values(&["link_start", by]);
        }
        for page in ["room", "console"] {
            self.web_page_views.with_label_values(&[page, "ok"]);
        }
        for (actor, message) in [
            ("billing", "track"),
            ("billing", "finish"),
            ("quota", "admit"),
            ("registry", "register"),
            ("registry", "unregister"),
            ("render_pool", "acquire"),
            ("render_pool", "attach"),
            ("render_pool", "prepare"),
            ("render_pool", "release"),
            ("session", "voice_event"),
            ("webhooks", "emit"),
            ("webhooks", "emit_agent"),
        ] {
            self.actor_messages.with_label_values(&[actor, message]);
        }
        // The scrape itself: counted once it has been answered.
        self.http_requests
            .with_label_values(&["GET", "/metrics", "200"]);
        self.http_duration.with_label_values(&["GET", "/metrics"]);
    }

    /// A render device's families at zero, from its start.
    pub fn zero_device(&self, device: &str) {
        self.render_frames.with_label_values(&[device]);
        self.render_dropped_frames.with_label_values(&[device]);
        self.render_frame_seconds.with_label_values(&[device]);
        self.render_batch_seconds.with_label_values(&[device]);
        self.render_worker_restarts.with_label_values(&[device]);
    }
}
