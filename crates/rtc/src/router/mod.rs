//! The protocol core: every viewer's str0m `Rtc`, grouped by session, driven by explicit inputs (a datagram,
//! a command, an encoded frame, the time) and producing datagrams in an outbox. No sockets, no clocks, no
//! threads here, so tests can drive it with in-memory packets on a virtual clock; `server.rs` wraps it in the UDP loop.
//!
//! str0m's one rule is honoured everywhere: after every mutation of an `Rtc` (input, write, candidate) its
//! `poll_output` is drained to `Timeout` before the next mutation ([`viewer::drive`]).
//!
//! Here the router and its tables (sessions, viewers); `viewer`: one viewer's state and its `drive`;
//! `packet`: what an outgoing datagram carries; `guard`: one str0m call with its panics caught; `tests`:
//! the router driven by a str0m client on a virtual clock.

mod guard;
mod packet;
mod viewer;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, Output, Rtc};

use crate::audio::{MonoResampler, OpusDecoder, API_RATE, OPUS_FRAME, OPUS_RATE};
use crate::mic::Mixer;
use crate::offer::{trickle_candidates, OfferPlan};
use crate::shared::{EncodedAudio, EncodedVideo, SessionKey, SessionShared};
use crate::stats::{dec, inc, Counters};
use crate::{RtcError, ViewerId};
use guard::guarded;
pub(crate) use packet::{PacketKind, Transmit};
use viewer::{drive, CloseReason, MicIn, Viewer};

/// A viewer waiting this long for a keyframe asks again (the first request or its keyframe was lost).
const KEYFRAME_RETRY: Duration = Duration::from_secs(1);

pub(crate) struct RouterConfig {
    /// The one host candidate every viewer is told about; also the destination of every datagram we get.
    pub candidate: SocketAddr,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_viewers_per_session: usize,
}

struct SessionEntry {
    shared: Arc<SessionShared>,
    viewers: Vec<ViewerId>,
    mixer: Mixer,
}

pub(crate) struct Router {
    cfg: RouterConfig,
    cert: DtlsCert,
    stats: Arc<Counters>,
    sessions: HashMap<SessionKey, SessionEntry>,
    viewers: HashMap<ViewerId, Viewer>,
    by_source: HashMap<SocketAddr, ViewerId>,
    next_viewer: u64,
    /// Datagrams to send, in order; drained by the I/O loop after every call.
    pub outbox: Vec<Transmit>,
}

impl Router {
    pub fn new(cfg: RouterConfig, cert: DtlsCert, stats: Arc<Counters>) -> Self {
        Router {
            cfg,
            cert,
            stats,
            sessions: HashMap::new(),
            viewers: HashMap::new(),
            by_source: HashMap::new(),
            next_viewer: 1,
            outbox: Vec::new(),
        }
    }

    pub fn open_session(&mut self, key: SessionKey, shared: Arc<SessionShared>) {
        inc(&self.stats.sessions);
        self.sessions.insert(
            key,
            SessionEntry {
                shared,
                viewers: Vec::new(),
                mixer: Mixer::default(),
            },
        );
    }

    pub fn close_session(&mut self, key: SessionKey) {
        let Some(entry) = self.sessions.get(&key) else {
            return;
        };
        for id in entry.viewers.clone() {
            self.close_viewer(id, CloseReason::SessionClosed);
        }
        if let Some(entry) = self.sessions.remove(&key) {
            entry.shared.mic.close();
            dec(&self.stats.sessions);
        }
    }

    pub fn close_all(&mut self) {
        let keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        for key in keys {
            self.close_session(key);
        }
    }

    pub fn stats(&self) -> &Arc<Counters> {
        &self.stats
    }

    /// Answers a browser's offer: a new viewer of session `key`, with the answer SDP.
    pub fn accept(
        &mut self,
        now: Instant,
        key: SessionKey,
        offer_sdp: &str,
        plan: &OfferPlan,
    ) -> Result<(ViewerId, String), RtcError> {
        let entry = self.sessions.get_mut(&key).ok_or(RtcError::SessionClosed)?;
        if entry.viewers.len() >= self.cfg.max_viewers_per_session {
            return Err(RtcError::TooManyViewers(self.cfg.max_viewers_per_session));
        }
        // str0m is fail-fast and may panic on input it did not foresee; an offer is untrusted input and
        // must not take the I/O thread (every viewer of every session) with it.
        let offer = catch_unwind(|| SdpOffer::from_sdp_string(offer_sdp))
            .map_err(|_| RtcError::InvalidSdp("the SDP parser gave up on it".into()))?
            .map_err(|e| RtcError::InvalidSdp(e.to_string()))?;

        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_dtls_cert(self.cert.clone())
            .clear_codecs()
            .enable_vp8(true)
            .enable_opus(true, false)
            // Browsers line audio up with video only once both have a sender report; 5 s is the default.
            .set_rtcp_report_interval_audio(Duration::from_secs(1))
            .build(now);
        let candidate = Candidate::host(self.cfg.candidate, "udp")
            .map_err(|e| RtcError::Config(format!("host candidate {}: {e}", self.cfg.candidate)))?;
        rtc.add_local_candidate(candidate);
        let answer = catch_unwind(AssertUnwindSafe(|| rtc.sdp_api().accept_offer(offer)))
            .map_err(|_| RtcError::UnsupportedOffer("str0m could not process it".into()))?
            .map_err(|e| match e {
                str0m::RtcError::RemoteSdp(msg) => RtcError::UnsupportedOffer(msg),
                other => RtcError::UnsupportedOffer(other.to_string()),
            })?;

        let video_mid = Mid::from(plan.video.as_str());
        let audio_mid = Mid::from(plan.audio.as_str());
        let (video_pt, video_pts) = negotiated(&mut rtc, video_mid, Codec::Vp8, "video")?;
        let (audio_pt, audio_pts) = negotiated(&mut rtc, audio_mid, Codec::Opus, "audio")?;
        let mut mics = HashMap::new();
        for mid in &plan.microphones {
            mics.insert(
                Mid::from(mid.as_str()),
                MicIn {
                    decoder: OpusDecoder::new()?,
                    resampler: MonoResampler::new(OPUS_RATE, API_RATE, OPUS_FRAME)?,
                    next_time: None,
                },
            );
        }

        let id = ViewerId(self.next_viewer);
        self.next_viewer += 1;
        let mut viewer = Viewer {
            session: key,
            rtc,
            video_mid,
            video_pt,
            audio_mid,
            audio_pt,
            video_pts,
            audio_pts,
            mics,
            created: now,
            last_rx: now,
            next_timeout: now,
            connected: false,
            video_up: false,
            audio_up: false,
            video_counted: false,
            audio_counted: false,
            waiting_keyframe: true,
            keyframe_asked: None,
            wants_keyframe: false,
            mic_out: Vec::new(),
            close: None,
        };
        drive(&mut viewer, now, &mut self.outbox, &self.stats);
        entry.viewers.push(id);
        entry.shared.add_viewer(id);
        self.viewers.insert(id, viewer);
        inc(&self.stats.connections_new);
        inc(&self.stats.viewers);
        tracing::debug!(viewer = %id, session = %entry.shared.name, "viewer accepted");
        Ok((id, answer.to_sdp_string()))
    }

    /// Trickle ICE from the browser. With ICE-lite the browser's checks reach us anyway, so candidates we
    /// cannot use (mDNS names) are skipped, not errors.
    pub fn patch(&mut self, now: Instant, id: ViewerId, fragment: &str) -> Result<(), RtcError> {
        let candidates = trickle_candidates(fragment)?;
        let viewer = self
            .viewers
            .get_mut(&id)
            .ok_or(RtcError::UnknownViewer(id))?;
        for line in candidates {
            match Candidate::from_sdp_string(line) {
                Ok(c) => {
                    viewer.rtc.add_remote_candidate(c);
                    drive(viewer, now, &mut self.outbox, &self.stats);
                }
                Err(e) => {
                    tracing::debug!(viewer = %id, error = %e, "skipping a trickled candidate")
                }
            }
        }
        self.after_drive(now, id);
        Ok(())
    }

    pub fn leave(&mut self, id: ViewerId) {
        self.close_viewer(id, CloseReason::Left);
    }

    /// One datagram from `source`.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        let Ok(contents) = data.try_into() else {
            return; // not STUN, DTLS, RTP or RTCP
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.cfg.candidate,
                contents,
            },
        );
        let cached = self
            .by_source
            .get(&source)
            .copied()
            .filter(|id| self.viewers.get(id).is_some_and(|v| v.rtc.accepts(&input)));
        let id = match cached {
            Some(id) => id,
            None => {
                let Some(id) = self
                    .viewers
                    .iter()
                    .find(|(_, v)| v.rtc.accepts(&input))
                    .map(|(id, _)| *id)
                else {
                    tracing::trace!(%source, "datagram for no viewer");
                    return;
                };
                self.by_source.insert(source, id);
                id
            }
        };
        let Some(viewer) = self.viewers.get_mut(&id) else {
            return;
        };
        viewer.last_rx = now;
        if let Err(e) = guarded(&mut viewer.rtc, |rtc| rtc.handle_input(input)) {
            tracing::debug!(viewer = %id, error = %e, "viewer input failed");
            viewer.close = Some(CloseReason::Failed);
        }
        drive(viewer, now, &mut self.outbox, &self.stats);
        self.after_drive(now, id);
    }

    /// Advances timers: str0m's own (retransmits, RTCP, DTLS) and ours (connect and idle timeouts).
    pub fn handle_timeout(&mut self, now: Instant) {
        let ids: Vec<ViewerId> = self.viewers.keys().copied().collect();
        for id in ids {
            let Some(v) = self.viewers.get_mut(&id) else {
                continue;
            };
            if !v.connected && now.duration_since(v.created) >= self.cfg.connect_timeout {
                v.close = Some(CloseReason::NeverConnected);
            } else if now.duration_since(v.last_rx) >= self.cfg.idle_timeout {
                v.close = Some(if v.connected {
                    CloseReason::Silent
                } else {
                    CloseReason::NeverConnected
                });
            } else {
                if v.video_up
                    && v.waiting_keyframe
                    && v.keyframe_asked
                        .is_some_and(|t| now.duration_since(t) >= KEYFRAME_RETRY)
                {
                    v.wants_keyframe = true;
                }
                if v.next_timeout <= now {
                    drive(v, now, &mut self.outbox, &self.stats);
                }
            }
            self.after_drive(now, id);
        }
    }

    /// When [`Router::handle_timeout`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.viewers
            .values()
            .map(|v| {
                let mut t = v.next_timeout.min(v.last_rx + self.cfg.idle_timeout);
                if !v.connected {
                    t = t.min(v.created + self.cfg.connect_timeout);
                }
                if let (true, Some(asked)) = (v.waiting_keyframe && v.video_up, v.keyframe_asked) {
                    t = t.min(asked + KEYFRAME_RETRY);
                }
                t
            })
            .min()
    }

    /// One encoded frame of session `key`, to every viewer whose video is up.
    pub fn send_video(&mut self, now: Instant, key: SessionKey, frame: &EncodedVideo) {
        let Some(entry) = self.sessions.get(&key) else {
            return;
        };
        for id in entry.viewers.clone() {
            let Some(v) = self.viewers.get_mut(&id) else {
                continue;
            };
            if !v.video_up || v.close.is_some() {
                continue;
            }
            if v.waiting_keyframe && !frame.keyframe {
                inc(&self.stats.frames_dropped_viewer);
                continue;
            }
            let (mid, pt) = (v.video_mid, v.video_pt);
            let time = MediaTime::new(frame.rtp_time, Frequency::NINETY_KHZ);
            let written = guarded(&mut v.rtc, |rtc| match rtc.writer(mid) {
                Some(w) => w.write(pt, frame.captured, time, frame.data.clone()),
                None => Err(str0m::RtcError::NoSenderSource),
            });
            match written {
                Ok(()) => {
                    if frame.keyframe {
                        v.waiting_keyframe = false;
                        v.keyframe_asked = None;
                    }
                }
                Err(e) => {
                    tracing::debug!(viewer = %id, error = %e, "video write failed");
                    inc(&self.stats.frames_dropped_viewer);
                }
            }
            drive(v, now, &mut self.outbox, &self.stats);
            self.after_drive(now, id);
        }
    }

    /// One Opus packet of session `key`, to every viewer whose audio is up.
    pub fn send_audio(&mut self, now: Instant, key: SessionKey, packet: &EncodedAudio) {
        let Some(entry) = self.sessions.get(&key) else {
            return;
        };
        for id in entry.viewers.clone() {
            let Some(v) = self.viewers.get_mut(&id) else {
                continue;
            };
            if !v.audio_up || v.close.is_some() {
                continue;
            }
            let (mid, pt) = (v.audio_mid, v.audio_pt);
            let time = MediaTime::new(packet.rtp_time, Frequency::FORTY_EIGHT_KHZ);
            let result = guarded(&mut v.rtc, |rtc| match rtc.writer(mid) {
                Some(w) => w.start_of_talkspurt(packet.talkspurt_start).write(
                    pt,
                    packet.captured,
                    time,
                    packet.data.clone(),
                ),
                None => Err(str0m::RtcError::NoSenderSource),
            });
            if let Err(e) = result {
                tracing::debug!(viewer = %id, error = %e, "audio write failed");
            }
            drive(v, now, &mut self.outbox, &self.stats);
            self.after_drive(now, id);
        }
    }

    /// Carries what a viewer's drive produced to its session (keyframe requests, microphone audio), and
    /// removes the viewer if it has to close.
    fn after_drive(&mut self, now: Instant, id: ViewerId) {
        let Some(v) = self.viewers.get_mut(&id) else {
            return;
        };
        let Some(entry) = self.sessions.get_mut(&v.session) else {
            return;
        };
        // Count the viewer in before asking for its keyframe: the encoder only works for counted viewers.
        if v.video_up && !v.video_counted {
            v.video_counted = true;
            entry.shared.add_video_viewer();
        }
        if v.audio_up && !v.audio_counted {
            v.audio_counted = true;
            entry.shared.add_audio_viewer();
        }
        if std::mem::take(&mut v.wants_keyframe) {
            v.keyframe_asked = Some(now);
            inc(&self.stats.keyframe_requests);
            entry.shared.request_keyframe();
        }
        if !v.mic_out.is_empty() {
            for chunk in entry.mixer.push(now, id, &v.mic_out) {
                entry.shared.mic.push(chunk);
            }
            v.mic_out.clear();
        }
        if let Some(reason) = v.close {
            self.close_viewer(id, reason);
        }
    }

    fn close_viewer(&mut self, id: ViewerId, reason: CloseReason) {
        let Some(mut v) = self.viewers.remove(&id) else {
            return;
        };
        // Polite close (RTCP BYE, DTLS close_notify) so a browser notices at once rather than by timeout.
        if v.rtc.is_alive() && guarded(&mut v.rtc, Rtc::close).is_ok() {
            for _ in 0..64 {
                match guarded(&mut v.rtc, Rtc::poll_output) {
                    Ok(Output::Transmit(t)) => self.outbox.push(Transmit {
                        destination: t.destination,
                        kind: PacketKind::Other,
                        contents: t.contents.into(),
                    }),
                    Ok(Output::Event(_)) => {}
                    Ok(Output::Timeout(_)) | Err(_) => break,
                }
                if !v.rtc.is_alive() {
                    break;
                }
            }
        }
        self.by_source.retain(|_, vid| *vid != id);
        if let Some(entry) = self.sessions.get_mut(&v.session) {
            entry.viewers.retain(|x| *x != id);
            entry.mixer.remove(id);
            entry
                .shared
                .remove_viewer(id, v.video_counted, v.audio_counted);
        }
        dec(&self.stats.viewers);
        if v.connected {
            dec(&self.stats.viewers_connected);
        }
        inc(&self.stats.connections_closed);
        match reason {
            CloseReason::NeverConnected => inc(&self.stats.connections_failed),
            CloseReason::Failed if !v.connected => inc(&self.stats.connections_failed),
            CloseReason::Silent => inc(&self.stats.connections_timed_out),
            _ => {}
        }
        tracing::debug!(viewer = %id, ?reason, "viewer closed");
    }
}

/// The payload type str0m negotiated for `codec` on `mid`, with all payload types of the section (RTX
/// included) for counting, or why the section is unusable.
fn negotiated(
    rtc: &mut Rtc,
    mid: Mid,
    codec: Codec,
    what: &str,
) -> Result<(Pt, Vec<u8>), RtcError> {
    let sends = rtc
        .media(mid)
        .map(|m| matches!(m.direction(), Direction::SendOnly | Direction::SendRecv))
        .unwrap_or(false);
    if !sends {
        return Err(RtcError::UnsupportedOffer(format!(
            "its {what} section (mid {mid}) could not be answered for sending"
        )));
    }
    let writer = rtc.writer(mid).ok_or_else(|| {
        RtcError::UnsupportedOffer(format!("its {what} section (mid {mid}) is not usable"))
    })?;
    let params: Vec<_> = writer
        .payload_params()
        .map(|p| (p.pt(), p.resend(), p.spec().codec))
        .collect();
    let pt = params
        .iter()
        .find(|(_, _, c)| *c == codec)
        .map(|(pt, _, _)| *pt)
        .ok_or_else(|| {
            RtcError::UnsupportedOffer(format!(
                "no {codec:?} could be negotiated for its {what} section (mid {mid})"
            ))
        })?;
    let mut pts = Vec::new();
    for (pt, resend, _) in params {
        pts.push(*pt);
        if let Some(r) = resend {
            pts.push(*r);
        }
    }
    Ok((pt, pts))
}
