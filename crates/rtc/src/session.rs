//! A media session: what its owner pushes (frames, voice), its encoder thread, and `RtcServer::open_session`,
//! which opens one. What it shares with the I/O thread (viewer counts, keyframe requests, the microphone
//! queue) is in `shared`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::audio::{MonoResampler, OpusEncoder, API_FRAME, API_RATE, OPUS_FRAME, OPUS_RATE};
use crate::mic::{MicQueue, Microphone};
use crate::offer::plan_offer;
use crate::server::{Command, IoHandle, MediaOut, RtcServer, ServerRef};
use crate::shared::{EncodedAudio, EncodedVideo, SessionKey, SessionShared, MAX_PENDING_FRAMES};
use crate::stats::inc;
use crate::vp8::{i420_plane_sizes, Vp8Encoder};
use crate::{RtcError, ViewerId};

/// The encoder thread's inbox: audio chunks (20 ms each) plus the pending frame.
const ENCODER_QUEUE: usize = 64;
/// Keyframes closer together than this are merged: PLIs from several viewers cost one keyframe.
const MIN_KEYFRAME_INTERVAL: Duration = Duration::from_millis(250);
/// Voice arriving this much later than the samples so far account for starts a new talkspurt.
const AUDIO_GAP: Duration = Duration::from_millis(60);
const AUDIO_BITRATE_BPS: i32 = 32_000;

enum EncoderInput {
    Video { i420: Vec<u8>, captured: Instant },
    Audio { pcm: Vec<i16>, captured: Instant },
}

/// One avatar session's media: encoded once, sent to every viewer. Dropping it closes every viewer and ends
/// the encoder thread.
pub struct MediaSession {
    key: SessionKey,
    shared: Arc<SessionShared>,
    io: Arc<IoHandle>,
    tx: SyncSender<EncoderInput>,
    _server: ServerRef,
    width: u32,
    height: u32,
    mic: Mutex<Option<Microphone>>,
}

impl MediaSession {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        io: Arc<IoHandle>,
        server: ServerRef,
        key: SessionKey,
        name: &str,
        width: u32,
        height: u32,
        fps: u32,
        video_bitrate_bps: u32,
    ) -> Result<MediaSession, RtcError> {
        let encoder = Vp8Encoder::new(width, height, fps, video_bitrate_bps)?;
        let epoch = Instant::now();
        let audio = AudioPipeline::new(epoch)?;
        let mic = Arc::new(MicQueue::default());
        let shared = Arc::new(SessionShared::new(name, epoch, mic.clone()));
        let (tx, rx) = sync_channel(ENCODER_QUEUE);
        let thread_shared = shared.clone();
        let thread_io = io.clone();
        std::thread::Builder::new()
            .name(format!("avs-rtc-enc-{}", key.0))
            .spawn(move || run_encoder(key, thread_shared, thread_io, rx, encoder, audio))?;
        io.command(Command::OpenSession {
            key,
            shared: shared.clone(),
        })?;
        Ok(MediaSession {
            key,
            shared,
            io,
            tx,
            _server: server,
            width,
            height,
            mic: Mutex::new(Some(Microphone::new(mic))),
        })
    }

    /// One rendered frame, I420 with tight strides (`width`, then `(width+1)/2` for U and V). Encoded once on
    /// the session's encoder thread for every viewer; never blocks. Without a viewer it is ignored; if the
    /// encoder is still busy it is dropped (counted in `video_frames_dropped_encoder_total`). The only error is
    /// planes too small for the session's size. `captured` is when the frame was rendered, at or before now:
    /// str0m's sender reports extrapolate from it and skip a wallclock in the future.
    pub fn push_video_i420(
        &self,
        y: &[u8],
        u: &[u8],
        v: &[u8],
        captured: Instant,
    ) -> Result<(), RtcError> {
        let (luma, chroma) = i420_plane_sizes(self.width, self.height);
        if y.len() < luma || u.len() < chroma || v.len() < chroma {
            return Err(RtcError::InvalidFrame(format!(
                "I420 planes of {}/{}/{} bytes are too small for {}x{} (need {luma}/{chroma}/{chroma})",
                y.len(),
                u.len(),
                v.len(),
                self.width,
                self.height
            )));
        }
        if self.shared.video_viewers.load(Relaxed) == 0 {
            return Ok(());
        }
        let stats = &self.io.stats;
        if self.shared.pending_frames.fetch_add(1, Relaxed) >= MAX_PENDING_FRAMES {
            self.shared.pending_frames.fetch_sub(1, Relaxed);
            inc(&stats.frames_dropped_encoder);
            return Ok(());
        }
        let mut i420 = self.shared.pooled_frame(luma + 2 * chroma);
        i420.extend_from_slice(&y[..luma]);
        i420.extend_from_slice(&u[..chroma]);
        i420.extend_from_slice(&v[..chroma]);
        if self
            .tx
            .try_send(EncoderInput::Video { i420, captured })
            .is_err()
        {
            self.shared.pending_frames.fetch_sub(1, Relaxed);
            inc(&stats.frames_dropped_encoder);
        }
        Ok(())
    }

    /// 16 kHz mono PCM of the avatar's voice, as it plays (20 ms chunks are best; any length works).
    /// `captured` is when its first sample plays, on the same clock as the frames' `captured`: that is what
    /// keeps lips and voice in sync at the browser. Like a frame's, it must not lie in the future. Never
    /// blocks; ignored without a viewer.
    pub fn push_audio(&self, pcm_16k: &[i16], captured: Instant) {
        if pcm_16k.is_empty() || self.shared.audio_viewers.load(Relaxed) == 0 {
            return;
        }
        let input = EncoderInput::Audio {
            pcm: pcm_16k.to_vec(),
            captured,
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(input)
        {
            inc(&self.io.stats.audio_chunks_dropped);
        }
    }

    /// The viewers' microphones, mixed: 16 kHz mono, 20 ms chunks. There is one reader: the first call
    /// returns it, later calls `None`.
    pub fn take_microphone(&self) -> Option<Microphone> {
        self.mic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// WHEP: answers a browser's offer with a new viewer and the answer SDP (ICE-lite, one host candidate,
    /// VP8 and Opus only). Runs on the media I/O thread; the caller only awaits.
    ///
    /// The offer must have, in any order (m-sections without these are answered but unused):
    /// - a video section the browser receives on (`recvonly`) that offers VP8;
    /// - an audio section the browser receives on that offers Opus: `recvonly`, or `sendrecv` carrying the
    ///   microphone; or a `recvonly` one plus a separate `sendonly` microphone section.
    ///
    /// ```js
    /// const pc = new RTCPeerConnection();
    /// pc.addTransceiver('video', { direction: 'recvonly' });
    /// const mic = (await navigator.mediaDevices.getUserMedia({ audio: true })).getAudioTracks()[0];
    /// pc.addTransceiver(mic, { direction: 'sendrecv' }); // no microphone: pc.addTransceiver('audio', { direction: 'recvonly' })
    /// await pc.setLocalDescription(await pc.createOffer()); // no need to wait for ICE gathering
    /// const res = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
    /// await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
    /// ```
    ///
    /// Errors: [`RtcError::InvalidSdp`] (not SDP), [`RtcError::UnsupportedOffer`] (missing sections, codecs,
    /// fingerprint or ICE credentials), [`RtcError::TooManyViewers`], [`RtcError::Stopped`].
    pub async fn accept(&self, offer_sdp: &str) -> Result<(ViewerId, String), RtcError> {
        let plan = plan_offer(offer_sdp)?;
        let (reply, answer) = oneshot::channel();
        self.io.command(Command::Accept {
            key: self.key,
            offer: offer_sdp.to_string(),
            plan,
            reply,
        })?;
        answer.await.map_err(|_| RtcError::Stopped)?
    }

    /// Trickle ICE (`application/trickle-ice-sdpfrag`). Not needed for a browser on the server's network
    /// (ICE-lite learns its address from its checks), accepted for WHEP clients that send it.
    pub async fn patch(&self, viewer: ViewerId, sdp_fragment: &str) -> Result<(), RtcError> {
        if !self.shared.ids().contains(&viewer) {
            return Err(RtcError::UnknownViewer(viewer));
        }
        let (reply, done) = oneshot::channel();
        self.io.command(Command::Patch {
            viewer,
            fragment: sdp_fragment.to_string(),
            reply,
        })?;
        done.await.map_err(|_| RtcError::Stopped)?
    }

    /// Closes one viewer of this session; `false` if it was not one (already gone, or another session's).
    pub fn leave(&self, viewer: ViewerId) -> bool {
        if !self.shared.ids().remove(&viewer) {
            return false;
        }
        // The I/O thread has gone only when the process is shutting down; then the viewer is gone too.
        let _ = self.io.command(Command::Leave { viewer });
        true
    }

    /// Viewers of this session, connected or still connecting.
    pub fn viewers(&self) -> usize {
        self.shared.ids().len()
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        self.shared.mic.close();
        // Closing the channel (dropping `tx` after this) ends the encoder thread.
        let _ = self.io.command(Command::CloseSession { key: self.key });
    }
}

impl RtcServer {
    /// Opens the media of one avatar session (`width`×`height` at `fps`). The VP8 encoder is made here (about
    /// a millisecond); its thread starts, but encodes only while the session has a viewer.
    pub fn open_session(
        &self,
        session_id: &str,
        width: u32,
        height: u32,
        fps: u32,
    ) -> Result<MediaSession, RtcError> {
        let key = self.next_session_key();
        MediaSession::open(
            self.io(),
            self.server_ref(),
            key,
            session_id,
            width,
            height,
            fps,
            self.config().video_bitrate_bps,
        )
    }
}

fn since_epoch(epoch: Instant, t: Instant, hz: u64) -> u64 {
    let d = t.saturating_duration_since(epoch);
    d.as_secs() * hz + (d.subsec_nanos() as u64 * hz) / 1_000_000_000
}

fn run_encoder(
    key: SessionKey,
    shared: Arc<SessionShared>,
    io: Arc<IoHandle>,
    rx: Receiver<EncoderInput>,
    mut encoder: Vp8Encoder,
    mut audio: AudioPipeline,
) {
    let stats = io.stats.clone();
    let (luma, chroma) = i420_plane_sizes(encoder.width(), encoder.height());
    let mut last_rtp: Option<u64> = None;
    let mut last_keyframe: Option<Instant> = None;
    let mut lost_frame = false;
    while let Ok(input) = rx.recv() {
        match input {
            EncoderInput::Video { i420, captured } => {
                shared.pending_frames.fetch_sub(1, Relaxed);
                if shared.video_viewers.load(Relaxed) == 0 {
                    shared.recycle_frame(i420);
                    continue;
                }
                let now = Instant::now();
                let force = lost_frame
                    || shared.keyframe_wanted.load(Relaxed)
                        && last_keyframe
                            .is_none_or(|t| now.duration_since(t) >= MIN_KEYFRAME_INTERVAL);
                if force {
                    shared.keyframe_wanted.store(false, Relaxed);
                }
                // RTP time must increase even if two frames carry the same instant.
                let mut rtp = since_epoch(shared.epoch, captured, 90_000);
                if let Some(last) = last_rtp {
                    rtp = rtp.max(last + 1);
                }
                last_rtp = Some(rtp);
                let (y, rest) = i420.split_at(luma);
                let (u, v) = rest.split_at(chroma);
                let started = Instant::now();
                let result = encoder.encode(y, u, v, rtp, force);
                stats.record_encode(started.elapsed().as_secs_f64());
                shared.recycle_frame(i420);
                match result {
                    Ok(Some(frame)) => {
                        inc(&stats.frames_encoded);
                        if frame.keyframe {
                            inc(&stats.keyframes_encoded);
                            last_keyframe = Some(now);
                        }
                        let out = EncodedVideo {
                            data: frame.data.into(),
                            keyframe: frame.keyframe,
                            rtp_time: rtp,
                            captured,
                        };
                        // Viewers would decode the next delta against a frame they never got (VP8
                        // pictures carry no frame numbers), so after a loss the next frame is a keyframe.
                        lost_frame = !io.media(MediaOut::Video { key, frame: out });
                        if lost_frame {
                            inc(&stats.frames_dropped_viewer);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(session = %shared.name, error = %e, "VP8 encode failed")
                    }
                }
            }
            EncoderInput::Audio { pcm, captured } => {
                for packet in audio.push(&pcm, captured) {
                    inc(&stats.audio_packets_encoded);
                    if !io.media(MediaOut::Audio { key, packet }) {
                        inc(&stats.audio_chunks_dropped);
                    }
                }
            }
        }
    }
    tracing::debug!(session = %shared.name, "encoder thread ends");
}

/// The avatar's voice from 16 kHz chunks to timed 20 ms Opus packets. Timing: the first chunk of a
/// talkspurt anchors it (its `captured` instant); every later sample is timed by counting, so packets are
/// exactly 20 ms apart on the RTP clock whatever the caller's jitter; a chunk arriving more than
/// [`AUDIO_GAP`] later than counting expects starts a new talkspurt.
pub(crate) struct AudioPipeline {
    epoch: Instant,
    resampler: MonoResampler,
    opus: OpusEncoder,
    pcm48: Vec<i16>,
    /// Capture instant of output sample 0 of this talkspurt, and output samples emitted since.
    anchor: Option<(Instant, u64)>,
    /// When the next input sample would play if the voice continues.
    next_input: Option<Instant>,
}

impl AudioPipeline {
    pub fn new(epoch: Instant) -> Result<Self, RtcError> {
        Ok(AudioPipeline {
            epoch,
            resampler: MonoResampler::new(API_RATE, OPUS_RATE, API_FRAME)?,
            opus: OpusEncoder::new(AUDIO_BITRATE_BPS)?,
            pcm48: Vec::with_capacity(OPUS_FRAME * 2),
            anchor: None,
            next_input: None,
        })
    }

    pub fn push(&mut self, pcm16: &[i16], captured: Instant) -> Vec<EncodedAudio> {
        let mut out = Vec::new();
        if let Some(expected) = self.next_input {
            if captured > expected + AUDIO_GAP {
                // A pause: finish the talkspurt (its tail padded to a whole frame) and start afresh.
                if !self.pcm48.is_empty() {
                    self.pcm48.resize(OPUS_FRAME, 0);
                    self.emit_frames(&mut out);
                }
                self.resampler.reset();
                self.pcm48.clear();
                self.anchor = None;
                self.next_input = None;
            }
        }
        let start = self.next_input.unwrap_or(captured);
        self.next_input = Some(
            start + Duration::from_nanos(pcm16.len() as u64 * 1_000_000_000 / API_RATE as u64),
        );
        if self.anchor.is_none() {
            self.anchor = Some((captured, 0));
        }
        self.resampler.process(pcm16, &mut self.pcm48);
        self.emit_frames(&mut out);
        out
    }

    fn emit_frames(&mut self, out: &mut Vec<EncodedAudio>) {
        let Some((anchor, mut emitted)) = self.anchor else {
            return;
        };
        // The decoder's output lags the input by the encoder's lookahead; the wallclock str0m maps each
        // packet's RTP time to (in its sender reports) is moved back by as much, so the browser plays each
        // sound at the instant it was captured, in step with the frames.
        let lookahead =
            Duration::from_nanos(self.opus.lookahead() as u64 * 1_000_000_000 / OPUS_RATE as u64);
        let mut offset = 0;
        while self.pcm48.len() - offset >= OPUS_FRAME {
            let frame = &self.pcm48[offset..offset + OPUS_FRAME];
            offset += OPUS_FRAME;
            let start = emitted;
            emitted += OPUS_FRAME as u64;
            let packet = match self.opus.encode(frame) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "Opus encode failed");
                    continue;
                }
            };
            let at = anchor + Duration::from_nanos(start * 1_000_000_000 / OPUS_RATE as u64);
            out.push(EncodedAudio {
                data: packet.into(),
                rtp_time: since_epoch(self.epoch, anchor, OPUS_RATE as u64) + start,
                captured: at.checked_sub(lookahead).unwrap_or(at),
                talkspurt_start: start == 0,
            });
        }
        self.pcm48.drain(..offset);
        self.anchor = Some((anchor, emitted));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::tests::tone;

    #[test]
    fn audio_packets_are_20ms_apart_on_one_clock_with_video() {
        let epoch = Instant::now();
        let mut p = AudioPipeline::new(epoch).unwrap();
        let t0 = epoch + Duration::from_millis(1000);
        let mut packets = Vec::new();
        let voice = tone(16_000, 200.0, 5000.0, 16_000);
        for (i, chunk) in voice.chunks(API_FRAME).enumerate() {
            // The caller's instants jitter by a few ms; packet timing must not.
            let jitter = Duration::from_millis((i % 3) as u64 * 4);
            packets.extend(p.push(chunk, t0 + Duration::from_millis(20 * i as u64) + jitter));
        }
        assert!(packets.len() >= 48, "{}", packets.len());
        assert!(packets[0].talkspurt_start && !packets[1].talkspurt_start);
        // Same instant→tick mapping as video: t0 is 1 s after the epoch.
        assert_eq!(packets[0].rtp_time, 48_000);
        let lookahead = Duration::from_nanos(312 * 1_000_000_000 / 48_000);
        assert_eq!(
            packets[0].captured,
            t0 - lookahead,
            "libopus VoIP lookahead: 312 samples"
        );
        for w in packets.windows(2) {
            assert_eq!(w[1].rtp_time - w[0].rtp_time, OPUS_FRAME as u64);
            assert_eq!(w[1].captured - w[0].captured, Duration::from_millis(20));
        }
        assert_eq!(since_epoch(epoch, t0, 90_000), 90_000);
    }

    #[test]
    fn a_pause_starts_a_new_talkspurt_at_its_own_instant() {
        let epoch = Instant::now();
        let mut p = AudioPipeline::new(epoch).unwrap();
        let voice = tone(16_000, 200.0, 5000.0, API_FRAME * 10);
        let mut first = Vec::new();
        for (i, chunk) in voice.chunks(API_FRAME).enumerate() {
            first.extend(p.push(chunk, epoch + Duration::from_millis(20 * i as u64)));
        }
        let resume = epoch + Duration::from_secs(3);
        let mut second = Vec::new();
        for (i, chunk) in voice.chunks(API_FRAME).enumerate() {
            second.extend(p.push(chunk, resume + Duration::from_millis(20 * i as u64)));
        }
        // 200 ms in; all but the resampler's few-ms lag came out as 9 packets; the tail is flushed, padded,
        // as the pause is noticed.
        assert_eq!(first.len(), 9);
        let last_first = first.last().unwrap().rtp_time;
        assert!(!second[0].talkspurt_start);
        assert_eq!(second[0].rtp_time, last_first + OPUS_FRAME as u64);
        let start = &second[1];
        assert!(start.talkspurt_start);
        assert_eq!(start.rtp_time, 3 * 48_000);
        assert_eq!(start.captured + Duration::from_nanos(6_500_000), resume);
    }
}
