//! (One file past 600 lines: 710 of code that share the viewer table, then the unit tests that drive
//! it on a virtual clock.)
//!
//! The protocol core: every viewer's str0m `Rtc`, grouped by session, driven by explicit inputs (a datagram,
//! a command, an encoded frame, the time) and producing datagrams in an outbox. No sockets, no clocks, no
//! threads here, so tests can drive it with in-memory packets on a virtual clock; `server.rs` wraps it in the UDP loop.
//!
//! str0m's one rule is honoured everywhere: after every mutation of an `Rtc` (input, write, candidate) its
//! `poll_output` is drained to `Timeout` before the next mutation ([`Router::drive`]).

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
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use crate::audio::{MonoResampler, OpusDecoder, API_RATE, OPUS_FRAME, OPUS_RATE};
use crate::mic::Mixer;
use crate::offer::{trickle_candidates, OfferPlan};
use crate::shared::{EncodedAudio, EncodedVideo, SessionKey, SessionShared};
use crate::stats::{add, dec, inc, Counters};
use crate::{RtcError, ViewerId};

/// A viewer waiting this long for a keyframe asks again (the first request or its keyframe was lost).
const KEYFRAME_RETRY: Duration = Duration::from_secs(1);
/// Longest microphone gap (in 20 ms frames) filled by Opus concealment; longer is a new talkspurt.
const MAX_CONCEALED_FRAMES: u64 = 5;

pub(crate) struct RouterConfig {
    /// The one host candidate every viewer is told about; also the destination of every datagram we get.
    pub candidate: SocketAddr,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_viewers_per_session: usize,
}

/// What an outgoing datagram carries, for the RTP counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PacketKind {
    Video,
    Audio,
    /// STUN, DTLS, RTCP, or RTP of a payload type we did not negotiate.
    Other,
}

#[derive(Debug)]
pub(crate) struct Transmit {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
    pub kind: PacketKind,
}

/// Classifies a datagram as RFC 7983 demultiplexes it: RTP or RTCP by the first byte (128..=191), RTCP if the
/// second byte is an RTCP packet type (RFC 5761: 192..=223), else RTP whose payload type picks the kind.
pub(crate) fn classify(datagram: &[u8], video_pts: &[u8], audio_pts: &[u8]) -> PacketKind {
    let (Some(&b0), Some(&b1)) = (datagram.first(), datagram.get(1)) else {
        return PacketKind::Other;
    };
    if !(128..=191).contains(&b0) || (192..=223).contains(&b1) {
        return PacketKind::Other;
    }
    let pt = b1 & 0x7f;
    if video_pts.contains(&pt) {
        PacketKind::Video
    } else if audio_pts.contains(&pt) {
        PacketKind::Audio
    } else {
        PacketKind::Other
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
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

struct MicIn {
    decoder: OpusDecoder,
    resampler: MonoResampler,
    /// RTP time (48 kHz) the next packet should carry if none was lost.
    next_time: Option<u64>,
}

struct Viewer {
    session: SessionKey,
    rtc: Rtc,
    video_mid: Mid,
    video_pt: Pt,
    audio_mid: Mid,
    audio_pt: Pt,
    /// Payload types of our outgoing video (VP8 and its RTX) and audio, for counting sent RTP by kind.
    video_pts: Vec<u8>,
    audio_pts: Vec<u8>,
    mics: HashMap<Mid, MicIn>,
    created: Instant,
    last_rx: Instant,
    next_timeout: Instant,
    connected: bool,
    video_up: bool,
    audio_up: bool,
    /// Whether this viewer is counted in its session's video/audio viewers (what makes the encoder work).
    video_counted: bool,
    audio_counted: bool,
    /// Delta frames are useless to a viewer until it has had a keyframe; it gets none until then.
    waiting_keyframe: bool,
    keyframe_asked: Option<Instant>,
    /// Set while driving; handled by the router afterwards (the viewer cannot reach its session then).
    wants_keyframe: bool,
    mic_out: Vec<i16>,
    close: Option<CloseReason>,
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
        Self::drive(&mut viewer, now, &mut self.outbox, &self.stats);
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
                    Self::drive(viewer, now, &mut self.outbox, &self.stats);
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
        Self::drive(viewer, now, &mut self.outbox, &self.stats);
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
                    Self::drive(v, now, &mut self.outbox, &self.stats);
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
            Self::drive(v, now, &mut self.outbox, &self.stats);
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
            Self::drive(v, now, &mut self.outbox, &self.stats);
            self.after_drive(now, id);
        }
    }

    /// Drains `poll_output` to `Timeout`: datagrams to the outbox, events to the viewer's state. A timeout
    /// already due (str0m packetises written media on its next time input) is fed at once, so a write's
    /// packets leave in the same call rather than on the loop's next turn.
    fn drive(v: &mut Viewer, now: Instant, outbox: &mut Vec<Transmit>, stats: &Counters) {
        let mut due_fed = 0;
        loop {
            if !v.rtc.is_alive() {
                v.close.get_or_insert(CloseReason::PeerClosed);
                return;
            }
            match guarded(&mut v.rtc, Rtc::poll_output) {
                Ok(Output::Timeout(t)) if t <= now && due_fed < 4 => {
                    due_fed += 1;
                    if let Err(e) = guarded(&mut v.rtc, |rtc| rtc.handle_input(Input::Timeout(now)))
                    {
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
                Ok(Output::Event(e)) => Self::on_event(v, e, stats),
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

/// Runs one str0m call on a viewer's `Rtc`. str0m is fail-fast: an unforeseen state panics. The I/O
/// thread serves every viewer of every session, so a panic costs only the viewer it happened in: its `Rtc`
/// is disconnected (no polite close from an inconsistent state) and the viewer is closed.
fn guarded<T>(
    rtc: &mut Rtc,
    f: impl FnOnce(&mut Rtc) -> Result<T, str0m::RtcError>,
) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(|| f(rtc))) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => {
            rtc.disconnect();
            Err("str0m panicked".to_string())
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_rfc7983_and_payload_type() {
        let rtp = |pt: u8| vec![0x80, pt, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(classify(&rtp(96), &[96, 97], &[111]), PacketKind::Video);
        assert_eq!(
            classify(&rtp(97 | 0x80), &[96, 97], &[111]),
            PacketKind::Video,
            "marker bit"
        );
        assert_eq!(classify(&rtp(111), &[96, 97], &[111]), PacketKind::Audio);
        assert_eq!(classify(&rtp(100), &[96, 97], &[111]), PacketKind::Other);
        // RTCP sender report (PT 200) and receiver report (201).
        assert_eq!(
            classify(&[0x80, 200, 0, 6], &[72], &[73]),
            PacketKind::Other
        );
        assert_eq!(classify(&[0x81, 201, 0, 7], &[73], &[]), PacketKind::Other);
        // STUN (first byte 0..3) and DTLS (20..63).
        assert_eq!(classify(&[0, 1, 0, 0], &[0, 1], &[]), PacketKind::Other);
        assert_eq!(classify(&[22, 254, 253], &[], &[]), PacketKind::Other);
        assert_eq!(classify(&[], &[], &[]), PacketKind::Other);
    }

    use crate::mic::MicQueue;
    use crate::offer::plan_offer;
    use crate::vp8::Vp8Encoder;
    use std::sync::atomic::Ordering::Relaxed;
    use str0m::change::SdpAnswer;
    use str0m::media::MediaKind;

    const SERVER: &str = "127.0.0.1:5000";
    const CLIENT: &str = "127.0.0.1:6000";

    /// A str0m client and the router talking through memory, on a virtual clock.
    struct Net {
        router: Router,
        client: Rtc,
        now: Instant,
        shared: Arc<SessionShared>,
        stats: Arc<Counters>,
        client_frames: Vec<(bool, usize)>,
        client_closed: bool,
    }

    impl Net {
        fn new(idle: Duration, connect: Duration) -> (Net, ViewerId) {
            let stats = Arc::new(Counters::default());
            let cert = str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate()
                .unwrap();
            let cfg = RouterConfig {
                candidate: SERVER.parse().unwrap(),
                connect_timeout: connect,
                idle_timeout: idle,
                max_viewers_per_session: 1,
            };
            let now = Instant::now();
            let mut router = Router::new(cfg, cert, stats.clone());
            let shared = Arc::new(SessionShared::new("t", now, Arc::new(MicQueue::default())));
            router.open_session(SessionKey(1), shared.clone());

            let mut client = Rtc::builder().build(now);
            client.add_local_candidate(Candidate::host(CLIENT.parse().unwrap(), "udp").unwrap());
            let mut change = client.sdp_api();
            change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
            change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
            let (offer, pending) = change.apply().unwrap();
            let offer = offer.to_sdp_string();
            let plan = plan_offer(&offer).unwrap();
            let (id, answer) = router.accept(now, SessionKey(1), &offer, &plan).unwrap();
            let err = router
                .accept(now, SessionKey(1), &offer, &plan)
                .unwrap_err();
            assert!(matches!(err, RtcError::TooManyViewers(1)), "{err}");
            client
                .sdp_api()
                .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
                .unwrap();
            let net = Net {
                router,
                client,
                now,
                shared,
                stats,
                client_frames: Vec::new(),
                client_closed: false,
            };
            (net, id)
        }

        /// Drains the client after one mutation: its datagrams go straight to the router.
        fn drain_client(&mut self) {
            let now = self.now;
            loop {
                match self.client.poll_output().unwrap() {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => {
                        self.router
                            .handle_datagram(now, CLIENT.parse().unwrap(), &t.contents)
                    }
                    Output::Event(Event::MediaData(d)) => {
                        self.client_frames.push((d.is_keyframe(), d.data.len()))
                    }
                    Output::Event(Event::Closed) => self.client_closed = true,
                    Output::Event(_) => {}
                }
            }
        }

        /// Delivers the router's datagrams to the client (or drops them, for a frozen client).
        fn deliver(&mut self, client_alive: bool) {
            // Datagrams the client sends in reply reach the router, whose replies land in the outbox
            // again: repeat until quiet.
            while !self.router.outbox.is_empty() {
                for t in std::mem::take(&mut self.router.outbox) {
                    if !client_alive {
                        continue;
                    }
                    let input = Input::Receive(
                        self.now,
                        Receive {
                            proto: Protocol::Udp,
                            source: SERVER.parse().unwrap(),
                            destination: t.destination,
                            contents: t.contents.as_slice().try_into().unwrap(),
                        },
                    );
                    self.client.handle_input(input).unwrap();
                    self.drain_client();
                }
            }
        }

        /// Advances the virtual clock by `step` and moves every datagram both ways; `client_alive: false`
        /// drops what reaches the client and lets it send nothing (a frozen tab).
        fn tick(&mut self, step: Duration, client_alive: bool) {
            self.now += step;
            if client_alive {
                self.client.handle_input(Input::Timeout(self.now)).unwrap();
                self.drain_client();
            }
            self.router.handle_timeout(self.now);
            self.deliver(client_alive);
        }
    }

    #[test]
    fn sans_io_viewer_connects_waits_for_a_keyframe_then_times_out_on_a_virtual_clock() {
        let (mut net, id) = Net::new(Duration::from_secs(3), Duration::from_secs(5));
        assert_eq!(net.shared.counts(), (1, 0, 0, false));
        for _ in 0..400 {
            net.tick(Duration::from_millis(5), true);
            if net.shared.counts_peek().1 == 1 {
                break;
            }
        }
        // Connected, video and audio up, and the new viewer asked for a keyframe.
        assert_eq!(net.shared.counts(), (1, 1, 1, true));
        assert_eq!(net.stats.connections_connected.load(Relaxed), 1);
        assert_eq!(net.stats.keyframe_requests.load(Relaxed), 1);

        let mut enc = Vp8Encoder::new(64, 48, 25, 200_000).unwrap();
        let (y, u, v) = (
            vec![90u8; 64 * 48],
            vec![128u8; 32 * 24],
            vec![128u8; 32 * 24],
        );
        let mut frame = |i: u64, key: bool| {
            let f = enc.encode(&y, &u, &v, i * 3600, key).unwrap().unwrap();
            EncodedVideo {
                keyframe: f.keyframe,
                data: f.data.into(),
                rtp_time: i * 3600,
                captured: net.now,
            }
        };
        let first = frame(0, false);
        let delta = frame(1, false);
        let key = frame(2, true);
        let now = net.now;
        // A delta before the viewer's first keyframe is withheld and counted.
        net.router.send_video(now, SessionKey(1), &delta);
        assert!(net
            .router
            .outbox
            .iter()
            .all(|t| t.kind != PacketKind::Video));
        assert_eq!(net.stats.frames_dropped_viewer.load(Relaxed), 1);
        net.router.send_video(now, SessionKey(1), &key);
        assert!(net
            .router
            .outbox
            .iter()
            .any(|t| t.kind == PacketKind::Video));
        net.tick(Duration::from_millis(5), true);
        assert_eq!(net.client_frames, vec![(true, key.data.len())]);
        drop(first);

        // The client goes silent: removed once the idle timeout passes, not before.
        for _ in 0..29 {
            net.tick(Duration::from_millis(100), false);
        }
        assert_eq!(net.shared.counts_peek().0, 1);
        for _ in 0..3 {
            net.tick(Duration::from_millis(100), false);
        }
        assert_eq!(net.shared.counts(), (0, 0, 0, false));
        assert_eq!(net.stats.connections_timed_out.load(Relaxed), 1);
        assert_eq!(net.stats.viewers.load(Relaxed), 0);
        assert!(net
            .router
            .patch(net.now, id, "a=end-of-candidates")
            .is_err());
    }

    #[test]
    fn answers_a_real_chromium_offer_with_vp8_and_opus_only() {
        let stats = Arc::new(Counters::default());
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .unwrap();
        let cfg = RouterConfig {
            candidate: "192.0.2.7:40000".parse().unwrap(),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_viewers_per_session: 4,
        };
        let mut router = Router::new(cfg, cert, stats);
        let now = Instant::now();
        let shared = Arc::new(SessionShared::new("t", now, Arc::new(MicQueue::default())));
        router.open_session(SessionKey(1), shared);
        let offer = include_str!("testdata/chromium-156-offer.sdp");
        let plan = plan_offer(offer).unwrap();
        let (_, answer) = router.accept(now, SessionKey(1), offer, &plan).unwrap();
        let has = |l: &str| answer.lines().any(|x| x.trim() == l);
        assert!(has("a=ice-lite"), "{answer}");
        assert!(
            answer.contains("192.0.2.7 40000 typ host"),
            "the public candidate: {answer}"
        );
        assert!(
            has("a=setup:passive") && has("a=sendonly") && has("a=sendrecv"),
            "{answer}"
        );
        let rtpmaps: Vec<&str> = answer
            .lines()
            .filter(|l| l.starts_with("a=rtpmap"))
            .collect();
        assert_eq!(
            rtpmaps,
            [
                "a=rtpmap:96 VP8/90000",
                "a=rtpmap:97 rtx/90000",
                "a=rtpmap:111 opus/48000/2"
            ]
        );
    }

    #[test]
    fn sans_io_leave_closes_politely_and_never_connecting_fails() {
        let (mut net, id) = Net::new(Duration::from_secs(10), Duration::from_secs(5));
        while net.shared.counts_peek().1 == 0 {
            net.tick(Duration::from_millis(5), true);
        }
        net.router.leave(id);
        assert!(!net.router.outbox.is_empty(), "BYE and close_notify go out");
        net.deliver(true);
        assert!(
            net.client_closed || !net.client.is_alive(),
            "the client saw the close"
        );
        assert_eq!(net.stats.connections_closed.load(Relaxed), 1);
        assert_eq!(net.stats.connections_failed.load(Relaxed), 0);

        let (mut net, _) = Net::new(Duration::from_secs(10), Duration::from_secs(2));
        for _ in 0..21 {
            net.tick(Duration::from_millis(100), false);
        }
        assert_eq!(net.stats.connections_failed.load(Relaxed), 1);
        assert_eq!(net.shared.counts_peek().0, 0);
        assert_eq!(net.router.next_deadline(), None);
    }
}
