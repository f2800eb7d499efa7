//! A real WebRTC peer for tests and benchmarks (this crate's and the server's): str0m as the
//! "browser" (it accepts loopback candidates, which Chromium does not without flags), libvpx and
//! libopus decoding what arrives. Built only with the `test-client` feature.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::audio::{OpusDecoder, OpusEncoder, OPUS_FRAME};
use crate::vp8::Vp8Decoder;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

#[derive(Clone)]
pub struct ClientConfig {
    /// 48 kHz mono PCM the client sends as its microphone (once), or nothing.
    pub microphone: Option<Vec<i16>>,
    /// Send the microphone on its own sendonly transceiver instead of the sendrecv audio one.
    pub separate_mic_track: bool,
    /// Decode VP8 (what a browser does); off to measure the server with many clients on few cores.
    pub decode_video: bool,
    /// Offer VP8 (a browser always does); off to test the server's refusal.
    pub offer_vp8: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            microphone: None,
            separate_mic_track: false,
            decode_video: true,
            offer_vp8: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub arrived: Instant,
    pub rtp: u64,
    pub keyframe: bool,
    pub bytes: usize,
    /// Only when decoding.
    pub width: u32,
    pub height: u32,
    pub square_luma: f64,
    pub hash: u64,
}

#[derive(Debug, Clone)]
pub struct AudioPacket {
    pub arrived: Instant,
    pub rtp: u64,
    pub bytes: usize,
    pub rms: f64,
    /// Index of the first sample above a loudness threshold, if any.
    pub onset: Option<usize>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub connected_at: Option<Instant>,
    pub first_frame_at: Option<Instant>,
    pub frames: Vec<Frame>,
    pub audio: Vec<AudioPacket>,
    pub decode_errors: usize,
    pub mic_packets_sent: usize,
    pub closed: bool,
    pub video_sr: Option<(SystemTime, u64)>,
    pub audio_sr: Option<(SystemTime, u64)>,
}

struct Shared {
    report: Mutex<Report>,
    paused: AtomicBool,
    stop: AtomicBool,
}

pub struct TestClient {
    rtc: Rtc,
    socket: UdpSocket,
    pending: SdpPendingOffer,
    video: Mid,
    audio: Mid,
    mic: Option<Mid>,
    cfg: ClientConfig,
}

impl TestClient {
    /// A client on 127.0.0.1 and its offer: receive video and audio, send a microphone.
    pub fn new(cfg: ClientConfig) -> (TestClient, String) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client socket");
        let addr = socket.local_addr().expect("client address");
        let mut builder = Rtc::builder();
        if !cfg.offer_vp8 {
            builder = builder
                .clear_codecs()
                .enable_h264(true)
                .enable_opus(true, false);
        }
        let mut rtc = builder.build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let mut change = rtc.sdp_api();
        let video = change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let audio_dir = if cfg.separate_mic_track {
            Direction::RecvOnly
        } else {
            Direction::SendRecv
        };
        let audio = change.add_media(MediaKind::Audio, audio_dir, None, None, None);
        let mic = if cfg.separate_mic_track {
            Some(change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None))
        } else {
            Some(audio)
        };
        let (offer, pending) = change.apply().expect("an offer");
        let client = TestClient {
            rtc,
            socket,
            pending,
            video,
            audio,
            mic,
            cfg,
        };
        (client, offer.to_sdp_string())
    }

    /// Applies the server's answer and runs the client on its own thread.
    pub fn start(mut self, answer: &str) -> ClientHandle {
        let answer = SdpAnswer::from_sdp_string(answer).expect("answer parses");
        self.rtc
            .sdp_api()
            .accept_answer(self.pending, answer)
            .expect("answer accepted");
        let shared = Arc::new(Shared {
            report: Mutex::new(Report::default()),
            paused: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let run = ClientLoop {
            rtc: self.rtc,
            socket: self.socket,
            video: self.video,
            audio: self.audio,
            mic: self.mic,
            cfg: self.cfg,
            shared: s,
        };
        let thread = std::thread::spawn(move || run.run());
        ClientHandle {
            shared,
            thread: Some(thread),
        }
    }
}

pub struct ClientHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl ClientHandle {
    pub fn report<R>(&self, f: impl FnOnce(&Report) -> R) -> R {
        f(&self.shared.report.lock().unwrap())
    }

    pub fn frames(&self) -> usize {
        self.report(|r| r.frames.len())
    }

    /// Stops reading and answering anything, as a frozen tab would.
    pub fn freeze(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    pub fn closed(&self) -> bool {
        self.report(|r| r.closed)
    }

    pub fn stop(mut self) -> Report {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("client thread");
        }
        std::mem::take(&mut *self.shared.report.lock().unwrap())
    }
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct ClientLoop {
    rtc: Rtc,
    socket: UdpSocket,
    video: Mid,
    audio: Mid,
    mic: Option<Mid>,
    cfg: ClientConfig,
    shared: Arc<Shared>,
}

impl ClientLoop {
    fn run(mut self) {
        let mut decoder = Vp8Decoder::new().expect("vp8 decoder");
        let mut opus_dec = OpusDecoder::new().expect("opus decoder");
        let mut opus_enc = OpusEncoder::new(32_000).expect("opus encoder");
        let mut mic_start: Option<Instant> = None;
        let mut mic_sent = 0usize;
        let mic_pcm = self.cfg.microphone.take();
        let mut buf = vec![0u8; 2048];
        let local = self.socket.local_addr().expect("local addr");
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return;
            }
            if self.shared.paused.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            // Drain output to the next timeout.
            let timeout = loop {
                if !self.rtc.is_alive() {
                    self.shared.report.lock().unwrap().closed = true;
                    return;
                }
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Transmit(t)) => {
                        let _ = self.socket.send_to(&t.contents, t.destination);
                    }
                    Ok(Output::Event(e)) => {
                        let now = Instant::now();
                        match e {
                            Event::Connected => {
                                self.shared.report.lock().unwrap().connected_at = Some(now);
                                mic_start = Some(now + Duration::from_millis(200));
                            }
                            Event::IceConnectionStateChange(IceConnectionState::Disconnected)
                            | Event::Closed => {
                                self.shared.report.lock().unwrap().closed = true;
                            }
                            Event::MediaData(d) if d.mid == self.video => {
                                let mut frame = Frame {
                                    arrived: now,
                                    rtp: d.time.rebase(Frequency::NINETY_KHZ).numer(),
                                    keyframe: d.is_keyframe(),
                                    bytes: d.data.len(),
                                    width: 0,
                                    height: 0,
                                    square_luma: 0.0,
                                    hash: 0,
                                };
                                let mut rep = self.shared.report.lock().unwrap();
                                if let Some(sr) = &d.last_sender_info {
                                    rep.video_sr = Some((
                                        sr.ntp_time,
                                        sr.rtp_time.rebase(Frequency::NINETY_KHZ).numer(),
                                    ));
                                }
                                if self.cfg.decode_video {
                                    match decoder.decode(&d.data) {
                                        Ok(Some(pic)) => {
                                            frame.width = pic.width;
                                            frame.height = pic.height;
                                            frame.square_luma =
                                                square_luma(&pic.y, pic.width, pic.height);
                                            frame.hash = hash(&pic.y);
                                        }
                                        Ok(None) => {}
                                        Err(_) => {
                                            rep.decode_errors += 1;
                                            continue;
                                        }
                                    }
                                }
                                rep.first_frame_at.get_or_insert(now);
                                rep.frames.push(frame);
                            }
                            Event::MediaData(d) if d.mid == self.audio => {
                                let mut rep = self.shared.report.lock().unwrap();
                                if let Some(sr) = &d.last_sender_info {
                                    rep.audio_sr = Some((
                                        sr.ntp_time,
                                        sr.rtp_time.rebase(Frequency::FORTY_EIGHT_KHZ).numer(),
                                    ));
                                }
                                let (rms, onset) = match opus_dec.decode(Some(&d.data)) {
                                    Ok(pcm) => {
                                        (rms(pcm), pcm.iter().position(|s| s.unsigned_abs() > 3000))
                                    }
                                    Err(_) => (0.0, None),
                                };
                                rep.audio.push(AudioPacket {
                                    arrived: now,
                                    rtp: d.time.rebase(Frequency::FORTY_EIGHT_KHZ).numer(),
                                    bytes: d.data.len(),
                                    rms,
                                    onset,
                                });
                            }
                            _ => {}
                        }
                    }
                    Err(e) => {
                        eprintln!("client poll error: {e}");
                        self.shared.report.lock().unwrap().closed = true;
                        return;
                    }
                }
            };
            let now = Instant::now();
            // The microphone: one 20 ms Opus packet when due.
            let mut next = timeout.min(now + Duration::from_millis(50));
            if let (Some(start), Some(pcm), Some(mid)) = (mic_start, mic_pcm.as_ref(), self.mic) {
                let due = start + Duration::from_millis(20 * mic_sent as u64);
                let offset = mic_sent * OPUS_FRAME;
                if offset + OPUS_FRAME <= pcm.len() {
                    if due <= now {
                        if let Some(writer) = self.rtc.writer(mid) {
                            let pt = writer
                                .payload_params()
                                .find(|p| p.spec().codec == Codec::Opus)
                                .map(|p| p.pt());
                            if let (Some(pt), Ok(pkt)) =
                                (pt, opus_enc.encode(&pcm[offset..offset + OPUS_FRAME]))
                            {
                                let time =
                                    MediaTime::new(offset as u64, Frequency::FORTY_EIGHT_KHZ);
                                if writer.write(pt, due, time, pkt).is_ok() {
                                    self.shared.report.lock().unwrap().mic_packets_sent += 1;
                                }
                            }
                        }
                        mic_sent += 1;
                        continue; // drain after the write
                    }
                    next = next.min(due);
                }
            }
            let wait = next
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            self.socket
                .set_read_timeout(Some(wait))
                .expect("read timeout");
            buf.resize(2048, 0);
            let input = match self.socket.recv_from(&mut buf) {
                Ok((n, source)) => {
                    buf.truncate(n);
                    let Ok(contents) = buf.as_slice().try_into() else {
                        continue;
                    };
                    Input::Receive(
                        Instant::now(),
                        Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: local,
                            contents,
                        },
                    )
                }
                Err(_) => Input::Timeout(Instant::now()),
            };
            if self.rtc.handle_input(input).is_err() {
                self.shared.report.lock().unwrap().closed = true;
                return;
            }
        }
    }
}

/// Mean luma of the top-left quadrant (the renderer's flat square).
pub fn square_luma(y: &[u8], w: u32, h: u32) -> f64 {
    let (w, h) = (w as usize, h as usize);
    let mut sum = 0u64;
    for row in 0..h / 2 {
        sum += y[row * w..row * w + w / 2]
            .iter()
            .map(|&p| p as u64)
            .sum::<u64>();
    }
    sum as f64 / ((w / 2) * (h / 2)).max(1) as f64
}

fn hash(p: &[u8]) -> u64 {
    // FNV-1a over every 7th byte: enough to tell pictures apart.
    p.iter().step_by(7).fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

pub fn rms(s: &[i16]) -> f64 {
    (s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / s.len().max(1) as f64).sqrt()
}

/// A sentence spoken by espeak-ng, resampled to 48 kHz (what a browser's microphone sends);
/// `None` without espeak-ng. hound reads the samples to the end, as a streamed espeak-ng WAV's
/// length field is bogus.
pub fn espeak_48k(text: &str) -> Option<Vec<i16>> {
    let out = std::process::Command::new("espeak-ng")
        .args(["--stdout", text])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let wav = hound::WavReader::new(std::io::Cursor::new(out.stdout)).ok()?;
    let rate = wav.spec().sample_rate;
    let pcm: Vec<i16> = wav.into_samples::<i16>().map_while(Result::ok).collect();
    let mut r = crate::audio::MonoResampler::new(rate, 48_000, 441).ok()?;
    let mut out = Vec::new();
    r.process(&pcm, &mut out);
    r.process(&vec![0; 4410], &mut out); // flush the filter's tail
    Some(out)
}
