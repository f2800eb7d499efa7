//! The local room's media engine as metrics: its own atomic totals, caught up at every scrape.

use std::sync::{Arc, OnceLock};

use prometheus::{Counter, IntCounter, IntCounterVec, IntGauge};

use super::reg::Reg;

pub const RTC_SESSIONS: &str = "avs_rtc_sessions";
pub const RTC_VIEWERS: &str = "avs_rtc_viewers";
pub const RTC_CONNECTIONS_TOTAL: &str = "avs_rtc_connections_total";
pub const RTC_PACKETS_SENT_TOTAL: &str = "avs_rtc_packets_sent_total";
pub const RTC_BYTES_SENT_TOTAL: &str = "avs_rtc_bytes_sent_total";
pub const RTC_KEYFRAME_REQUESTS_TOTAL: &str = "avs_rtc_keyframe_requests_total";
pub const RTC_FRAMES_ENCODED_TOTAL: &str = "avs_rtc_frames_encoded_total";
pub const RTC_FRAMES_DROPPED_TOTAL: &str = "avs_rtc_frames_dropped_total";
pub const RTC_ENCODE_SECONDS_TOTAL: &str = "avs_rtc_encode_seconds_total";
pub const RTC_MICROPHONE_SECONDS_TOTAL: &str = "avs_rtc_microphone_seconds_total";

/// The local room's media engine, read at every scrape (it counts in atomics of its own).
#[derive(Clone)]
pub(super) struct RtcMetrics {
    pub(super) server: Arc<OnceLock<avs_rtc::RtcServer>>,
    pub(super) sessions: IntGauge,
    pub(super) viewers: IntGauge,
    pub(super) connections: IntCounterVec,
    pub(super) packets: IntCounterVec,
    pub(super) bytes: IntCounterVec,
    pub(super) keyframe_requests: IntCounter,
    pub(super) frames_encoded: IntCounter,
    pub(super) frames_dropped: IntCounterVec,
    pub(super) encode_seconds: Counter,
    pub(super) microphone_seconds: Counter,
}

/// Brings a counter up to a total kept elsewhere (totals only grow).
fn catch_up(counter: &IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

fn catch_up_f64(counter: &Counter, total: f64) {
    let delta = total - counter.get();
    if delta > 0.0 {
        counter.inc_by(delta);
    }
}

impl RtcMetrics {
    pub(super) fn new(r: &Reg) -> Self {
        Self {
            server: Arc::new(OnceLock::new()),
            sessions: r.gauge(RTC_SESSIONS, "Sessions with a local-room media session"),
            viewers: r.gauge(RTC_VIEWERS, "Browser viewers of local-room sessions"),
            connections: r.counters(
                RTC_CONNECTIONS_TOTAL,
                "WebRTC viewer connections by what happened (new, connected, closed, failed, timed_out)",
                &["state"],
            ),
            packets: r.counters(RTC_PACKETS_SENT_TOTAL, "RTP packets sent to viewers", &["kind"]),
            bytes: r.counters(RTC_BYTES_SENT_TOTAL, "RTP bytes sent to viewers", &["kind"]),
            keyframe_requests: r.counter(
                RTC_KEYFRAME_REQUESTS_TOTAL,
                "Keyframes asked for (new viewers, PLI, FIR)",
            ),
            frames_encoded: r.counter(RTC_FRAMES_ENCODED_TOTAL, "Video frames encoded (once per session)"),
            frames_dropped: r.counters(
                RTC_FRAMES_DROPPED_TOTAL,
                "Video frames dropped (where: encoder behind, viewer behind)",
                &["where"],
            ),
            encode_seconds: r.counter_f64(RTC_ENCODE_SECONDS_TOTAL, "Time spent encoding video frames"),
            microphone_seconds: r.counter_f64(
                RTC_MICROPHONE_SECONDS_TOTAL,
                "Seconds of viewers' microphone audio received",
            ),
        }
    }

    pub(super) fn refresh(&self) {
        let Some(server) = self.server.get() else {
            return;
        };
        let s = server.stats();
        self.sessions.set(s.sessions as i64);
        self.viewers.set(s.viewers as i64);
        for (state, total) in [
            ("new", s.connections_new_total),
            ("connected", s.connections_connected_total),
            ("closed", s.connections_closed_total),
            ("failed", s.connections_failed_total),
            ("timed_out", s.connections_timed_out_total),
        ] {
            catch_up(&self.connections.with_label_values(&[state]), total);
        }
        for (kind, packets, bytes) in [
            (
                "video",
                s.rtp_video_packets_sent_total,
                s.rtp_video_bytes_sent_total,
            ),
            (
                "audio",
                s.rtp_audio_packets_sent_total,
                s.rtp_audio_bytes_sent_total,
            ),
        ] {
            catch_up(&self.packets.with_label_values(&[kind]), packets);
            catch_up(&self.bytes.with_label_values(&[kind]), bytes);
        }
        catch_up(&self.keyframe_requests, s.keyframe_requests_total);
        catch_up(&self.frames_encoded, s.video_frames_encoded_total);
        catch_up(
            &self.frames_dropped.with_label_values(&["encoder"]),
            s.video_frames_dropped_encoder_total,
        );
        catch_up(
            &self.frames_dropped.with_label_values(&["viewer"]),
            s.video_frames_dropped_viewer_total,
        );
        catch_up_f64(&self.encode_seconds, s.encode_seconds_sum);
        catch_up_f64(&self.microphone_seconds, s.microphone_seconds_total);
    }
}
