//! One `Metrics` over its own Prometheus registry (no globals: several apps can share a process).

use prometheus::{
    Counter, Encoder, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Registry, TextEncoder,
};

mod known;
mod reg;
mod rtc;

use reg::Reg;
use rtc::RtcMetrics;
pub use rtc::{
    RTC_BYTES_SENT_TOTAL, RTC_CONNECTIONS_TOTAL, RTC_ENCODE_SECONDS_TOTAL,
    RTC_FRAMES_DROPPED_TOTAL, RTC_FRAMES_ENCODED_TOTAL, RTC_KEYFRAME_REQUESTS_TOTAL,
    RTC_MICROPHONE_SECONDS_TOTAL, RTC_PACKETS_SENT_TOTAL, RTC_SESSIONS, RTC_VIEWERS,
};

pub const HTTP_REQUESTS_TOTAL: &str = "avs_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "avs_http_request_duration_seconds";
pub const SESSIONS_LIVE: &str = "avs_sessions_live";
pub const SESSIONS_STARTED_TOTAL: &str = "avs_sessions_started_total";
pub const SESSIONS_ENDED_TOTAL: &str = "avs_sessions_ended_total";
pub const ORPHANS_ENDED_TOTAL: &str = "avs_orphaned_sessions_ended_total";
pub const CLUSTER_FORWARDS_TOTAL: &str = "avs_cluster_forwards_total";
pub const CLUSTER_FORWARD_SECONDS: &str = "avs_cluster_forward_seconds";
pub const CLUSTER_NODE_FREE_SLOTS: &str = "avs_cluster_node_free_slots";
pub const CLUSTER_NODE_LIVE_SESSIONS: &str = "avs_cluster_node_live_sessions";
pub const SESSION_START_SECONDS: &str = "avs_session_start_seconds";
pub const ADMISSIONS_REJECTED_TOTAL: &str = "avs_admissions_rejected_total";
pub const BILLED_SECONDS_TOTAL: &str = "avs_billed_seconds_total";
pub const CHILD_RESTARTS_TOTAL: &str = "avs_session_child_restarts_total";
pub const WEBHOOK_DELIVERIES_TOTAL: &str = "avs_webhook_deliveries_total";
pub const WEBHOOK_OUTBOX_PENDING: &str = "avs_webhook_outbox_pending";
pub const AGENT_GENERATIONS_TOTAL: &str = "avs_agent_generations_total";
pub const ACTOR_MESSAGES_TOTAL: &str = "avs_actor_messages_total";
pub const WS_CONNECTIONS: &str = "avs_ws_connections";
pub const WS_FRAMES_TOTAL: &str = "avs_ws_frames_total";
pub const WS_EVICTIONS_TOTAL: &str = "avs_ws_slow_reader_evictions_total";
pub const FANOUT_DELIVERIES_TOTAL: &str = "avs_fanout_deliveries_total";
pub const RENDER_SLOTS: &str = "avs_render_slots";
pub const RENDER_FRAMES_TOTAL: &str = "avs_render_frames_total";
pub const RENDER_DROPPED_FRAMES_TOTAL: &str = "avs_render_dropped_frames_total";
pub const RENDER_FRAME_SECONDS: &str = "avs_render_frame_seconds";
pub const RENDER_JPEG_SECONDS: &str = "avs_render_jpeg_seconds";
pub const RENDER_BATCH_SECONDS: &str = "avs_render_batch_seconds";
pub const RENDER_BATCH_SIZE: &str = "avs_render_batch_size";
pub const RENDER_FIRST_FRAME_SECONDS: &str = "avs_render_first_frame_seconds";
pub const RENDER_WORKER_RESTARTS_TOTAL: &str = "avs_render_worker_restarts_total";
pub const LIVEKIT_PUBLISHED_SESSIONS: &str = "avs_livekit_published_sessions";
pub const LIVEKIT_VIDEO_FRAMES_TOTAL: &str = "avs_livekit_video_frames_total";
pub const LIVEKIT_USER_AUDIO_SECONDS_TOTAL: &str = "avs_livekit_user_audio_seconds_total";
pub const LIVEKIT_RECONNECTS_TOTAL: &str = "avs_livekit_reconnects_total";
pub const LIVEKIT_FFI_HANDLES: &str = "avs_livekit_ffi_handles";
pub const LIVEKIT_AGENT_STREAMS_TOTAL: &str = "avs_livekit_agent_streams_total";
pub const LIVEKIT_AGENT_AUDIO_SECONDS_TOTAL: &str = "avs_livekit_agent_audio_seconds_total";
pub const LIVEKIT_AGENT_RESAMPLED_TOTAL: &str = "avs_livekit_agent_streams_resampled_total";
pub const LIVEKIT_RPC_TOTAL: &str = "avs_livekit_rpc_total";
pub const BILLING_UNBILLED_SECONDS: &str = "avs_billing_unbilled_seconds";
pub const BILLING_SETTLEMENTS_TOTAL: &str = "avs_billing_settlements_total";
pub const BILLING_FAILURES_TOTAL: &str = "avs_billing_failures_total";
pub const BILLING_WRITE_SECONDS: &str = "avs_billing_write_seconds";
pub const RATE_LIMITED_TOTAL: &str = "avs_rate_limited_total";
pub const FACE_DETECTION_SECONDS: &str = "avs_face_detection_seconds";
pub const PREVIEW_DROPPED_TOTAL: &str = "avs_preview_dropped_total";
pub const WEB_PAGE_VIEWS_TOTAL: &str = "avs_web_page_views_total";
pub const LINK_START_FAILURES_TOTAL: &str = "avs_link_start_failures_total";
pub const CONTROL_ACK_SECONDS: &str = "avs_control_ack_seconds";
pub const SPEAK_TO_SPEECH_SECONDS: &str = "avs_speak_to_speech_seconds";
pub const DATABASE_UP: &str = "avs_database_up";

/// Every metric this server exports (the Grafana dashboard is checked against this list).
pub const ALL: &[&str] = &[
    HTTP_REQUESTS_TOTAL,
    HTTP_REQUEST_DURATION_SECONDS,
    SESSIONS_LIVE,
    SESSIONS_STARTED_TOTAL,
    SESSIONS_ENDED_TOTAL,
    ORPHANS_ENDED_TOTAL,
    CLUSTER_FORWARDS_TOTAL,
    CLUSTER_FORWARD_SECONDS,
    CLUSTER_NODE_FREE_SLOTS,
    CLUSTER_NODE_LIVE_SESSIONS,
    SESSION_START_SECONDS,
    ADMISSIONS_REJECTED_TOTAL,
    BILLED_SECONDS_TOTAL,
    CHILD_RESTARTS_TOTAL,
    WEBHOOK_DELIVERIES_TOTAL,
    WEBHOOK_OUTBOX_PENDING,
    AGENT_GENERATIONS_TOTAL,
    ACTOR_MESSAGES_TOTAL,
    WS_CONNECTIONS,
    WS_FRAMES_TOTAL,
    WS_EVICTIONS_TOTAL,
    FANOUT_DELIVERIES_TOTAL,
    RENDER_SLOTS,
    RENDER_FRAMES_TOTAL,
    RENDER_DROPPED_FRAMES_TOTAL,
    RENDER_FRAME_SECONDS,
    RENDER_JPEG_SECONDS,
    RENDER_BATCH_SECONDS,
    RENDER_BATCH_SIZE,
    RENDER_FIRST_FRAME_SECONDS,
    RENDER_WORKER_RESTARTS_TOTAL,
    RATE_LIMITED_TOTAL,
    BILLING_UNBILLED_SECONDS,
    BILLING_SETTLEMENTS_TOTAL,
    BILLING_FAILURES_TOTAL,
    BILLING_WRITE_SECONDS,
    LIVEKIT_PUBLISHED_SESSIONS,
    LIVEKIT_VIDEO_FRAMES_TOTAL,
    LIVEKIT_USER_AUDIO_SECONDS_TOTAL,
    LIVEKIT_RECONNECTS_TOTAL,
    LIVEKIT_FFI_HANDLES,
    LIVEKIT_AGENT_STREAMS_TOTAL,
    LIVEKIT_AGENT_AUDIO_SECONDS_TOTAL,
    LIVEKIT_AGENT_RESAMPLED_TOTAL,
    LIVEKIT_RPC_TOTAL,
    RTC_SESSIONS,
    RTC_VIEWERS,
    RTC_CONNECTIONS_TOTAL,
    RTC_PACKETS_SENT_TOTAL,
    RTC_BYTES_SENT_TOTAL,
    RTC_KEYFRAME_REQUESTS_TOTAL,
    RTC_FRAMES_ENCODED_TOTAL,
    RTC_FRAMES_DROPPED_TOTAL,
    RTC_ENCODE_SECONDS_TOTAL,
    RTC_MICROPHONE_SECONDS_TOTAL,
    FACE_DETECTION_SECONDS,
    PREVIEW_DROPPED_TOTAL,
    WEB_PAGE_VIEWS_TOTAL,
    LINK_START_FAILURES_TOTAL,
    CONTROL_ACK_SECONDS,
    SPEAK_TO_SPEECH_SECONDS,
    DATABASE_UP,
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub sessions_live: IntGauge,
    pub sessions_started: IntCounterVec,
    pub sessions_ended: IntCounterVec,
    /// Sessions no actor ran, ended by this node: its own after a restart (`shutdown`), or a lost
    /// node's (`node_lost`, a failover).
    pub orphans_ended: IntCounterVec,
    /// Requests forwarded to the node running their sessions, by kind and outcome.
    pub cluster_forwards: IntCounterVec,
    pub cluster_forward_seconds: HistogramVec,
    /// Every node this one hears (itself included), as its last advert says.
    pub cluster_node_free_slots: IntGaugeVec,
    pub cluster_node_live_sessions: IntGaugeVec,
    pub session_start_seconds: Histogram,
    pub admissions_rejected: IntCounterVec,
    pub billed_seconds: IntCounter,
    pub child_restarts: IntCounterVec,
    pub webhook_deliveries: IntCounterVec,
    pub webhook_pending: IntGauge,
    pub agent_generations: IntCounterVec,
    pub actor_messages: IntCounterVec,
    pub ws_connections: IntGaugeVec,
    pub ws_frames: IntCounterVec,
    pub ws_evictions: IntCounter,
    pub fanout_deliveries: IntCounterVec,
    pub render_slots: IntGaugeVec,
    pub render_frames: IntCounterVec,
    pub render_dropped_frames: IntCounterVec,
    pub render_frame_seconds: HistogramVec,
    pub render_jpeg_seconds: Histogram,
    pub render_batch_seconds: HistogramVec,
    pub render_batch_size: Histogram,
    pub render_first_frame_seconds: Histogram,
    pub render_worker_restarts: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub billing_unbilled_seconds: IntGauge,
    pub billing_settlements: IntCounterVec,
    pub billing_failures: IntCounterVec,
    pub billing_write_seconds: HistogramVec,
    /// A control command received → its ack (or pong) ready, by command.
    pub control_ack: HistogramVec,
    /// A `speak` accepted by a session → its `speech_started`.
    pub speak_to_speech: Histogram,
    /// 1 while the database answers a ping, 0 while it does not.
    pub database_up: IntGauge,
    pub livekit_published: IntGauge,
    pub livekit_video_frames: IntCounter,
    pub livekit_user_audio_seconds: Counter,
    pub livekit_reconnects: IntCounter,
    livekit_ffi_handles: IntGauge,
    /// LiveKit Agents' audio streams to an avatar (outcome: accepted, not_the_agent, no_format,
    /// bad_format).
    pub livekit_agent_streams: IntCounterVec,
    pub livekit_agent_audio_seconds: Counter,
    pub livekit_agent_resampled: IntCounter,
    /// The avatar protocol's RPCs (method; direction: received, sent; outcome).
    pub livekit_rpc: IntCounterVec,
    rtc: RtcMetrics,
    pub face_detection_seconds: Histogram,
    pub preview_dropped: IntCounterVec,
    /// Room pages by what they showed (a live link, or why not), and console pages.
    pub web_page_views: IntCounterVec,
    /// Refused `POST /v1/links/start-session`, by error code: what visitors of room pages hit.
    pub link_start_failures: IntCounterVec,
}

/// Frame-scale timings: 0.5 ms to 128 ms.
const FRAME_BUCKETS: [f64; 9] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = Reg(&registry);
        let metrics = Self {
            http_requests: r.counters(HTTP_REQUESTS_TOTAL, "HTTP requests", &["method", "route", "status"]),
            http_duration: r.histograms(
                HTTP_REQUEST_DURATION_SECONDS,
                "HTTP request latency",
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
                &["method", "route"],
            ),
            sessions_live: r.gauge(SESSIONS_LIVE, "Sessions with a running actor on this node"),
            sessions_started: r.counters(SESSIONS_STARTED_TOTAL, "Sessions admitted", &["source"]),
            sessions_ended: r.counters(SESSIONS_ENDED_TOTAL, "Sessions ended", &["reason"]),
            cluster_forwards: r.counters(
                CLUSTER_FORWARDS_TOTAL,
                "Requests forwarded to another node (kind: stop, deliver, start, rtc; outcome: ok, refused, no_answer)",
                &["kind", "outcome"],
            ),
            cluster_forward_seconds: r.histograms(
                CLUSTER_FORWARD_SECONDS,
                "A forwarded request to its answer",
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0],
                &["kind"],
            ),
            cluster_node_free_slots: r.gauges(
                CLUSTER_NODE_FREE_SLOTS,
                "Free render slots of each node of the cluster, as advertised",
                &["node"],
            ),
            cluster_node_live_sessions: r.gauges(
                CLUSTER_NODE_LIVE_SESSIONS,
                "Live sessions of each node of the cluster, as advertised",
                &["node"],
            ),
            orphans_ended: r.counters(
                ORPHANS_ENDED_TOTAL,
                "Sessions no actor ran, ended by this node (shutdown: its own after a restart; node_lost: a lost node's)",
                &["reason"],
            ),
            session_start_seconds: r.histogram(
                SESSION_START_SECONDS,
                "Start request to live",
                &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
            ),
            admissions_rejected: r.counters(ADMISSIONS_REJECTED_TOTAL, "Session starts refused", &["reason"]),
            billed_seconds: r.counter(BILLED_SECONDS_TOTAL, "Session seconds billed"),
            child_restarts: r.counters(CHILD_RESTARTS_TOTAL, "Session children restarted", &["child"]),
            webhook_deliveries: r.counters(WEBHOOK_DELIVERIES_TOTAL, "Webhook delivery attempts", &["outcome"]),
            webhook_pending: r.gauge(WEBHOOK_OUTBOX_PENDING, "Webhook deliveries waiting in the outbox"),
            agent_generations: r.counters(AGENT_GENERATIONS_TOTAL, "Agent generations finished", &["outcome"]),
            actor_messages: r.counters(ACTOR_MESSAGES_TOTAL, "Messages handled by actors", &["actor", "message"]),
            ws_connections: r.gauges(WS_CONNECTIONS, "Open WebSocket channels", &["channel"]),
            ws_frames: r.counters(WS_FRAMES_TOTAL, "WebSocket frames", &["direction", "type"]),
            ws_evictions: r.counter(WS_EVICTIONS_TOTAL, "Channel clients dropped for reading too slowly"),
            fanout_deliveries: r.counters(
                FANOUT_DELIVERIES_TOTAL,
                "speak/add_context deliveries to sessions",
                &["kind"],
            ),
            render_slots: r.gauges(
                RENDER_SLOTS,
                "Render slots per device (state: total, in_use)",
                &["device", "state"],
            ),
            render_frames: r.counters(RENDER_FRAMES_TOTAL, "Frames rendered", &["device"]),
            render_dropped_frames: r.counters(
                RENDER_DROPPED_FRAMES_TOTAL,
                "Frames not rendered because a tick overran",
                &["device"],
            ),
            render_frame_seconds: r.histograms(
                RENDER_FRAME_SECONDS,
                "Time to render one frame",
                &FRAME_BUCKETS,
                &["device"],
            ),
            render_jpeg_seconds: r.histogram(RENDER_JPEG_SECONDS, "Time to encode one frame as JPEG", &FRAME_BUCKETS),
            render_batch_seconds: r.histograms(
                RENDER_BATCH_SECONDS,
                "Time of one batched lip-sync model run",
                &FRAME_BUCKETS,
                &["device"],
            ),
            render_batch_size: r.histogram(
                RENDER_BATCH_SIZE,
                "Sessions in one lip-sync batch",
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            ),
            render_first_frame_seconds: r.histogram(
                RENDER_FIRST_FRAME_SECONDS,
                "From a session's frames first being wanted (a viewer, a room publisher) to its first frame",
                &[0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5],
            ),
            render_worker_restarts: r.counters(
                RENDER_WORKER_RESTARTS_TOTAL,
                "Render device workers restarted after a panic (their sessions restart their renderers)",
                &["device"],
            ),
            rate_limited: r.counters(
                RATE_LIMITED_TOTAL,
                "Requests refused by a rate limit (route; by: ip or key)",
                &["route", "by"],
            ),
            billing_unbilled_seconds: r.gauge(
                BILLING_UNBILLED_SECONDS,
                "Live seconds not yet settled (billing lag)",
            ),
            billing_settlements: r.counters(
                BILLING_SETTLEMENTS_TOTAL,
                "Billing writes (kind: checkpoint, final)",
                &["kind"],
            ),
            billing_failures: r.counters(
                BILLING_FAILURES_TOTAL,
                "Billing writes that failed and were kept for retry",
                &["what"],
            ),
            billing_write_seconds: r.histograms(
                BILLING_WRITE_SECONDS,
                "Time of one batched billing write",
                &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
                &["kind"],
            ),
            control_ack: r.histograms(
                CONTROL_ACK_SECONDS,
                "Control channel command received to its ack",
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
                &["command"],
            ),
            speak_to_speech: r.histogram(
                SPEAK_TO_SPEECH_SECONDS,
                "A speak accepted by a session to its speech_started",
                &[0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5],
            ),
            database_up: r.gauge(DATABASE_UP, "1 while the database answers, else 0"),
            livekit_published: r.gauge(
                LIVEKIT_PUBLISHED_SESSIONS,
                "Sessions whose avatar is in its LiveKit room, publishing",
            ),
            livekit_video_frames: r.counter(LIVEKIT_VIDEO_FRAMES_TOTAL, "Frames published into LiveKit rooms"),
            livekit_user_audio_seconds: r.counter_f64(
                LIVEKIT_USER_AUDIO_SECONDS_TOTAL,
                "Seconds of users' microphone audio received from LiveKit rooms",
            ),
            livekit_reconnects: r.counter(LIVEKIT_RECONNECTS_TOTAL, "LiveKit connections the library restored"),
            livekit_ffi_handles: r.gauge(
                LIVEKIT_FFI_HANDLES,
                "Live handles of LiveKit's FFI library (rooms, tracks, sources, streams)",
            ),
            livekit_agent_streams: r.counters(
                LIVEKIT_AGENT_STREAMS_TOTAL,
                "Audio streams a room's agent sent its avatar (outcome: accepted, not_the_agent, no_format, bad_format)",
                &["outcome"],
            ),
            livekit_agent_audio_seconds: r.counter_f64(
                LIVEKIT_AGENT_AUDIO_SECONDS_TOTAL,
                "Seconds of a room agent's speech received by its avatar (16 kHz)",
            ),
            livekit_agent_resampled: r.counter(
                LIVEKIT_AGENT_RESAMPLED_TOTAL,
                "Agent audio streams not at 16 kHz mono, resampled",
            ),
            livekit_rpc: r.counters(
                LIVEKIT_RPC_TOTAL,
                "LiveKit Agents avatar RPCs (method; direction: received, sent; outcome: ok, error, unsupported)",
                &["method", "direction", "outcome"],
            ),
            rtc: RtcMetrics::new(&r),
            face_detection_seconds: r.histogram(
                FACE_DETECTION_SECONDS,
                "Face detection time per image",
                &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0],
            ),
            preview_dropped: r.counters(
                PREVIEW_DROPPED_TOTAL,
                "Preview frames or audio chunks skipped for a slow reader",
                &["kind"],
            ),
            web_page_views: r.counters(
                WEB_PAGE_VIEWS_TOTAL,
                "Pages served (page: room, console; outcome: ok or why a link cannot start)",
                &["page", "outcome"],
            ),
            link_start_failures: r.counters(
                LINK_START_FAILURES_TOTAL,
                "Link start-session requests refused, by error code",
                &["reason"],
            ),
            registry,
        };
        metrics.zero_known_labels();
        metrics
    }

    /// Reads the local room's media engine at every scrape from now on.
    pub fn watch_rtc(&self, server: avs_rtc::RtcServer) {
        let _ = self.rtc.server.set(server);
    }

    pub fn render(&self) -> String {
        self.rtc.refresh();
        self.livekit_ffi_handles
            .set(avs_livekit_ffi::live_handles() as i64);
        let mut buffer = Vec::new();
        // unwrap: encoding gathered families into a Vec cannot fail.
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .unwrap();
        String::from_utf8_lossy(&buffer).into_owned()
    }

    /// The nodes of the cluster as this one hears them now: the nodes no longer heard drop out.
    /// Each node is `(node id, free slots, live sessions)`, this one included.
    pub fn cluster_nodes<'a>(&self, nodes: impl IntoIterator<Item = (&'a str, usize, usize)>) {
        self.cluster_node_free_slots.reset();
        self.cluster_node_live_sessions.reset();
        for (node_id, free_slots, live_sessions) in nodes {
            self.cluster_node_free_slots
                .with_label_values(&[node_id])
                .set(free_slots as i64);
            self.cluster_node_live_sessions
                .with_label_values(&[node_id])
                .set(live_sessions as i64);
        }
    }

    pub fn actor_message(&self, actor: &str, message: &str) {
        self.actor_messages
            .with_label_values(&[actor, message])
            .inc();
    }

    /// Counts and times one request forwarded to another node (`kind`: stop, deliver, start, rtc).
    pub fn forwarded(&self, kind: &str, outcome: &str, took: std::time::Duration) {
        self.cluster_forwards
            .with_label_values(&[kind, outcome])
            .inc();
        self.cluster_forward_seconds
            .with_label_values(&[kind])
            .observe(took.as_secs_f64());
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every registered family is in `ALL`, and `ALL` names nothing unregistered.
    #[test]
    fn all_lists_exactly_the_registered_metrics() {
        let m = Metrics::new();
        // Touch every labelled family so that it shows in a scrape.
        m.http_requests
            .with_label_values(&["GET", "/", "200"])
            .inc();
        m.http_duration
            .with_label_values(&["GET", "/"])
            .observe(0.1);
        m.sessions_started.with_label_values(&["api"]).inc();
        m.sessions_ended.with_label_values(&["x"]).inc();
        m.admissions_rejected.with_label_values(&["x"]).inc();
        m.child_restarts.with_label_values(&["room"]).inc();
        m.webhook_deliveries.with_label_values(&["ok"]).inc();
        m.agent_generations.with_label_values(&["ready"]).inc();
        m.actor_message("a", "b");
        m.ws_connections.with_label_values(&["control"]).inc();
        m.ws_frames.with_label_values(&["in", "ping"]).inc();
        m.fanout_deliveries.with_label_values(&["ws"]).inc();
        m.render_slots.with_label_values(&["cpu", "total"]).set(1);
        m.render_frames.with_label_values(&["cpu"]).inc();
        m.render_dropped_frames.with_label_values(&["cpu"]).inc();
        m.render_frame_seconds
            .with_label_values(&["cpu"])
            .observe(0.1);
        m.render_batch_seconds
            .with_label_values(&["cpu"])
            .observe(0.1);
        m.preview_dropped.with_label_values(&["video"]).inc();
        m.render_worker_restarts.with_label_values(&["cpu"]).inc();
        m.control_ack.with_label_values(&["ping"]).observe(0.001);
        m.billing_settlements.with_label_values(&["final"]).inc();
        m.rate_limited.with_label_values(&["connect", "ip"]).inc();
        m.billing_failures.with_label_values(&["final"]).inc();
        m.billing_write_seconds
            .with_label_values(&["final"])
            .observe(0.1);
        m.rtc.connections.with_label_values(&["new"]).inc();
        m.rtc.packets.with_label_values(&["video"]).inc();
        m.rtc.bytes.with_label_values(&["video"]).inc();
        m.rtc.frames_dropped.with_label_values(&["viewer"]).inc();
        m.web_page_views.with_label_values(&["room", "ok"]).inc();
        m.orphans_ended.with_label_values(&["node_lost"]).inc();
        m.cluster_forwards.with_label_values(&["stop", "ok"]).inc();
        m.cluster_forward_seconds
            .with_label_values(&["stop"])
            .observe(0.001);
        m.cluster_node_free_slots.with_label_values(&["n"]).set(1);
        m.cluster_node_live_sessions
            .with_label_values(&["n"])
            .set(1);
        m.link_start_failures
            .with_label_values(&["link_inactive"])
            .inc();
        m.livekit_agent_streams
            .with_label_values(&["accepted"])
            .inc();
        m.livekit_rpc
            .with_label_values(&["lk.clear_buffer", "received", "ok"])
            .inc();
        let mut registered: Vec<String> = m
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        registered.sort();
        let mut all: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
        all.sort();
        assert_eq!(registered, all);
    }
}
