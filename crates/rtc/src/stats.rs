//! Counters shared by the I/O thread and the encoder threads, read as one [`RtcStats`] snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds (seconds) of the encode-time histogram buckets; a last, implicit bucket is +Inf.
pub const ENCODE_BUCKETS_SECONDS: [f64; 7] = [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064];

/// A snapshot of the media engine's counters (`*_total`, monotonic) and gauges, for Prometheus.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RtcStats {
    /// Gauge: media sessions open.
    pub sessions: u64,
    /// Gauge: viewers, whatever their state.
    pub viewers: u64,
    /// Gauge: viewers whose ICE and DTLS are up.
    pub viewers_connected: u64,
    /// Viewers accepted (state `new`).
    pub connections_new_total: u64,
    /// Viewers that reached ICE + DTLS connected.
    pub connections_connected_total: u64,
    /// Viewers closed, for any reason (leave, session end, timeout, error).
    pub connections_closed_total: u64,
    /// Of the closed, those that never connected (ICE/DTLS did not complete in time, or failed).
    pub connections_failed_total: u64,
    /// Of the closed, those that went silent after connecting.
    pub connections_timed_out_total: u64,
    pub rtp_video_packets_sent_total: u64,
    pub rtp_video_bytes_sent_total: u64,
    pub rtp_audio_packets_sent_total: u64,
    pub rtp_audio_bytes_sent_total: u64,
    /// Datagrams the socket refused (send buffer full); the viewer repairs through NACK or PLI.
    pub datagrams_send_dropped_total: u64,
    /// Keyframes asked for: a new viewer, a PLI or a FIR (a viewer that waited too long asks again).
    pub keyframe_requests_total: u64,
    pub video_frames_encoded_total: u64,
    pub video_keyframes_encoded_total: u64,
    /// Frames dropped before encoding because the session's encoder was still busy.
    pub video_frames_dropped_encoder_total: u64,
    /// Frames a viewer did not get: it was waiting for a keyframe, or the I/O thread was behind.
    pub video_frames_dropped_viewer_total: u64,
    pub audio_packets_encoded_total: u64,
    /// 20 ms audio chunks dropped because the encoder thread's queue was full.
    pub audio_chunks_dropped_total: u64,
    /// Sum and count of VP8 encode times.
    pub encode_seconds_sum: f64,
    pub encode_seconds_count: u64,
    /// Cumulative histogram: `(upper bound in seconds, count ≤ bound)`; the last bound is `f64::INFINITY`.
    pub encode_seconds_buckets: Vec<(f64, u64)>,
    /// Seconds of viewers' microphone audio decoded (summed over viewers).
    pub microphone_seconds_total: f64,
    /// libvpx contexts alive in the process (a leak check).
    pub codec_contexts: i64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub sessions: AtomicU64,
    pub viewers: AtomicU64,
    pub viewers_connected: AtomicU64,
    pub connections_new: AtomicU64,
    pub connections_connected: AtomicU64,
    pub connections_closed: AtomicU64,
    pub connections_failed: AtomicU64,
    pub connections_timed_out: AtomicU64,
    pub video_packets: AtomicU64,
    pub video_bytes: AtomicU64,
    pub audio_packets: AtomicU64,
    pub audio_bytes: AtomicU64,
    pub send_dropped: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub frames_encoded: AtomicU64,
    pub keyframes_encoded: AtomicU64,
    pub frames_dropped_encoder: AtomicU64,
    pub frames_dropped_viewer: AtomicU64,
    pub audio_packets_encoded: AtomicU64,
    pub audio_chunks_dropped: AtomicU64,
    pub encode_nanos: AtomicU64,
    pub encode_count: AtomicU64,
    pub encode_buckets: [AtomicU64; ENCODE_BUCKETS_SECONDS.len() + 1],
    /// Microphone samples decoded, at 48 kHz.
    pub mic_samples_48k: AtomicU64,
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

pub(crate) fn dec(c: &AtomicU64) {
    // Gauges are decremented only after a matching increment, so this never wraps.
    c.fetch_sub(1, Relaxed);
}

impl Counters {
    pub fn record_encode(&self, seconds: f64) {
        add(&self.encode_nanos, (seconds * 1e9) as u64);
        inc(&self.encode_count);
        let bucket = ENCODE_BUCKETS_SECONDS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(ENCODE_BUCKETS_SECONDS.len());
        inc(&self.encode_buckets[bucket]);
    }

    pub fn snapshot(&self) -> RtcStats {
        let g = |c: &AtomicU64| c.load(Relaxed);
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(ENCODE_BUCKETS_SECONDS.len() + 1);
        for (i, c) in self.encode_buckets.iter().enumerate() {
            cumulative += g(c);
            let bound = ENCODE_BUCKETS_SECONDS
                .get(i)
                .copied()
                .unwrap_or(f64::INFINITY);
            buckets.push((bound, cumulative));
        }
        RtcStats {
            sessions: g(&self.sessions),
            viewers: g(&self.viewers),
            viewers_connected: g(&self.viewers_connected),
            connections_new_total: g(&self.connections_new),
            connections_connected_total: g(&self.connections_connected),
            connections_closed_total: g(&self.connections_closed),
            connections_failed_total: g(&self.connections_failed),
            connections_timed_out_total: g(&self.connections_timed_out),
            rtp_video_packets_sent_total: g(&self.video_packets),
            rtp_video_bytes_sent_total: g(&self.video_bytes),
            rtp_audio_packets_sent_total: g(&self.audio_packets),
            rtp_audio_bytes_sent_total: g(&self.audio_bytes),
            datagrams_send_dropped_total: g(&self.send_dropped),
            keyframe_requests_total: g(&self.keyframe_requests),
            video_frames_encoded_total: g(&self.frames_encoded),
            video_keyframes_encoded_total: g(&self.keyframes_encoded),
            video_frames_dropped_encoder_total: g(&self.frames_dropped_encoder),
            video_frames_dropped_viewer_total: g(&self.frames_dropped_viewer),
            audio_packets_encoded_total: g(&self.audio_packets_encoded),
            audio_chunks_dropped_total: g(&self.audio_chunks_dropped),
            encode_seconds_sum: g(&self.encode_nanos) as f64 / 1e9,
            encode_seconds_count: g(&self.encode_count),
            encode_seconds_buckets: buckets,
            microphone_seconds_total: g(&self.mic_samples_48k) as f64 / 48_000.0,
            codec_contexts: crate::vp8::live_codec_contexts(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_with_an_infinite_bucket() {
        let c = Counters::default();
        for s in [0.0005, 0.003, 0.003, 0.5] {
            c.record_encode(s);
        }
        let s = c.snapshot();
        assert_eq!(s.encode_seconds_count, 4);
        assert!((s.encode_seconds_sum - 0.5065).abs() < 1e-6);
        let counts: Vec<u64> = s.encode_seconds_buckets.iter().map(|b| b.1).collect();
        assert_eq!(counts, vec![1, 1, 3, 3, 3, 3, 3, 4]);
        assert!(s.encode_seconds_buckets.last().unwrap().0.is_infinite());
    }
}
