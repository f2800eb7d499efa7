//! One viewer: its str0m `Rtc` and what the router knows of it, and [`drive`], which drains the `Rtc`'s
//! output after every mutation (str0m's one rule) into the outbox and the viewer's state.

use std::collections::HashMap;
use std::time::Instant;

use str0m::media::{Frequency, Mid, Pt};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use super::guard::guarded;
use super::packet::{classify, Transmit};
use crate::audio::{MonoResampler, OpusDecoder, OPUS_FRAME};
use crate::shared::SessionKey;
use crate::stats::{add, inc, Counters};

/// Longest microphone gap (in 20 ms frames) filled by Opus concealment; longer is a new talkspurt.
const MAX_CONCEALED_FRAMES: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CloseReason {
    Left,
    SessionClosed,
    /// ICE/DTLS did not complete within the connect timeout.
    NeverConnected,
    /// No datagram from the viewer within the idle timeout.
    Silent,
    /// str0m reported an error or the peer closed.
    Failed,
    PeerClosed,
}

pub(super) struct MicIn {
    pub(super) decoder: OpusDecoder,
    pub(super) resampler: MonoResampler,
    /// RTP time (48 kHz) the next packet should carry if none was lost.
    pub(super) next_time: Option<u64>,
}

pub(super) struct Viewer {
    pub(super) session: SessionKey,
    pub(super) rtc: Rtc,
    pub(super) video_mid: Mid,
    pub(super) video_pt: Pt,
    pub(super) audio_mid: Mid,
    pub(super) audio_pt: Pt,
    /// Payload types of our outgoing video (VP8 and its RTX) and audio, for counting sent RTP by kind.
    pub(super) video_pts: Vec<u8>,
    pub(super) audio_pts: Vec<u8>,
    pub(super) mics: HashMap<Mid, MicIn>,
    pub(super) created: Instant,
    pub(super) last_rx: Instant,
    pub(super) next_timeout: Instant,
    pub(super) connected: bool,
    pub(super) video_up: bool,
    pub(super) audio_up: bool,
    /// Whether this viewer is counted in its session's video/audio viewers (what makes the encoder work).
    pub(super) video_counted: bool,
    pub(super) audio_counted: bool,
    /// Delta frames are useless to a viewer until it has had a keyframe; it gets none until then.
    pub(super) waiting_keyframe: bool,
    pub(super) keyframe_asked: Option<Instant>,
    /// Set while driving; handled by the router afterwards (the viewer cannot reach its session then).
    pub(super) wants_keyframe: bool,
    pub(super) mic_out: Vec<i16>,
    pub(super) close: Option<CloseReason>,
}

/// Drains `poll_output` to `Timeout`: datagrams to the outbox, events to the viewer's state. A timeout
/// already due (str0m packetises written media on its next time input) is fed at once, so a write's
/// packets leave in the same call rather than on the loop's next turn.
pub(super) fn drive(v: &mut Viewer, now: Instant, outbox: &mut Vec<Transmit>, stats: &Counters) {
    let mut due_fed = 0;
    loop {
        if !v.rtc.is_alive() {
            v.close.get_or_insert(CloseReason::PeerClosed);
            return;
        }
        match guarded(&mut v.rtc, Rtc::poll_output) {
            Ok(Output::Timeout(t)) if t <= now && due_fed < 4 => {
                due_fed += 1;
                if let Err(e) = guarded(&mut v.rtc, |rtc| rtc.handle_input(Input::Timeout(now))) {
                    tracing::debug!(error = %e, "viewer timeout failed");
                    v.close.get_or_insert(CloseReason::Failed);
                    return;
                }
            }
            Ok(Output::Timeout(t)) => {
                v.next_timeout = t;
                return;
            }
            Ok(Output::Transmit(t)) => outbox.push(Transmit {
                destination: t.destination,
                kind: classify(&t.contents, &v.video_pts, &v.audio_pts),
                contents: t.contents.into(),
            }),
            Ok(Output::Event(e)) => on_event(v, e, stats),
            Err(e) => {
                tracing::debug!(error = %e, "viewer poll failed");
                v.close.get_or_insert(CloseReason::Failed);
                return;
            }
        }
    }
}

fn on_event(v: &mut Viewer, event: Event, stats: &Counters) {
    match event {
        Event::Connected => {
            v.connected = true;
            inc(&stats.connections_connected);
            inc(&stats.viewers_connected);
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            v.close.get_or_insert(CloseReason::Silent);
        }
        Event::Closed => {
            v.close.get_or_insert(CloseReason::PeerClosed);
        }
        Event::MediaAdded(m) => {
            if m.mid == v.video_mid {
                v.video_up = true;
                v.wants_keyframe = true;
            }
            if m.mid == v.audio_mid {
                v.audio_up = true;
            }
        }
        Event::KeyframeRequest(req) if req.mid == v.video_mid => {
            tracing::trace!(kind = ?req.kind, "keyframe requested by viewer");
            v.wants_keyframe = true;
        }
        Event::MediaData(data) => {
            let Some(mic) = v.mics.get_mut(&data.mid) else {
                return;
            };
            // str0m hands over a few empty packets on a fresh track; libopus rejects them.
            if data.data.is_empty() {
                return;
            }
            let time = data.time.rebase(Frequency::FORTY_EIGHT_KHZ).numer();
            if let Some(expected) = mic.next_time {
                let missing = time.saturating_sub(expected) / OPUS_FRAME as u64;
                if missing > MAX_CONCEALED_FRAMES {
                    mic.resampler.reset();
                } else {
                    for _ in 0..missing {
                        if let Ok(pcm) = mic.decoder.decode(None) {
                            mic.resampler.process(pcm, &mut v.mic_out);
                        }
                    }
                }
            }
            match mic.decoder.decode(Some(&data.data)) {
                Ok(pcm) => {
                    add(&stats.mic_samples_48k, pcm.len() as u64);
                    mic.next_time = Some(time + pcm.len() as u64);
                    mic.resampler.process(pcm, &mut v.mic_out);
                }
                Err(e) => tracing::debug!(error = %e, "microphone packet not decodable"),
            }
        }
        _ => {}
    }
}
