//! A render device's worker: one thread that, every frame tick, hears every session attached to its
//! device, runs a lip-sync model for the speaking ones in one batch, has every watched session's
//! frame drawn and encoded on every core (rayon's pool), hands each its frame, and sleeps until
//! the next tick.
//!
//! The thread supervises itself: a panic anywhere in a tick (the model run, the mel step, the paste,
//! a frame) is caught, every session on the device is told its renderer failed (each restarts it
//! under its own policy: `renderer_restarted`, then `renderer_failed`), and the worker starts over
//! with no sessions. `alive` goes false only if the thread itself ends, and the pool hands out no
//! slot on such a device.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use tokio::sync::{broadcast, mpsc};

use crate::media::audio::{MelSpec, MEL_SAMPLES};
use crate::media::lipsync::{LipFace, LipSync};
use crate::media::render::{blink_at, render_into, FrameParams, Prepared};
use crate::media::visemes::Mouth;
use crate::media::yuv::I420;
use crate::media::{jpeg, FrameWants, VideoFrame};
use crate::metrics::Metrics;
use crate::voice::Voiced;

/// `Attached::fault` values: what an injected fault makes the worker do.
pub const FAULT_NONE: u8 = 0;
/// This session's next frame fails (as a renderer error would).
pub const FAULT_FRAME: u8 = 1;
/// The worker panics in its next tick, outside any frame's render.
pub const FAULT_WORKER_PANIC: u8 = 2;

/// What a worker tells a session's renderer.
#[derive(Debug, Clone)]
pub enum RenderNotice {
    /// The first frame is out, this long after `Attach`.
    FirstFrame { after: Duration },
    /// Rendering failed; the session's renderer is detached.
    Failed(String),
}

pub(super) enum Command {
    Attach(Box<Attached>),
    Detach(u64),
    Stop,
}

/// A session being rendered on a worker.
pub(super) struct Attached {
    pub(super) slot: u64,
    pub(super) prepared: Arc<Prepared>,
    /// The lip-sync model's view of the face, made on first use.
    pub(super) lip: Option<LipFace>,
    pub(super) audio: broadcast::Receiver<Voiced>,
    /// What the voice says, and the mouth it makes.
    pub(super) mouth: Mouth,
    pub(super) frames: broadcast::Sender<VideoFrame>,
    pub(super) notices: mpsc::UnboundedSender<RenderNotice>,
    /// An injected fault (`FAULT_*`), for operators checking supervision and for tests.
    pub(super) fault: Arc<AtomicU8>,
    /// Preview clients wanting JPEG: encoded only while there are some.
    pub(super) wants: Arc<FrameWants>,
    pub(super) started: Instant,
    /// When its frames were first wanted (attached watched, or its first viewer): its time to
    /// first frame counts from there.
    pub(super) watched_from: Option<Instant>,
    /// Whether anyone takes its frames, read once a tick from `wants`.
    pub(super) watched: bool,
    pub(super) seq: u64,
    pub(super) seed: u32,
    /// The frame's source when a lip-sync model pasted a mouth into a copy of the base.
    pub(super) src: Vec<u8>,
    pub(super) out: Vec<u8>,
}

impl Attached {
    /// Someone takes its frames (a preview, a room publisher; each holds a `Want` while it
    /// does), as of this tick. Unwatched, nothing is drawn: a burst of starts nobody watches
    /// costs its viewers' frames nothing, and ten thousand idle sessions cost two atomic loads
    /// each a tick.
    fn watched(&self) -> bool {
        self.watched
    }
}

pub(super) struct Worker {
    pub(super) label: String,
    pub(super) period: Duration,
    pub(super) jpeg_quality: u8,
    pub(super) lipsync: Option<LipSync>,
    pub(super) mel: MelSpec,
    pub(super) sessions: Vec<Attached>,
    pub(super) metrics: Metrics,
}

/// Loudness above which a lip-sync model is asked for a mouth.
const SPEAKING: f32 = 0.02;

/// Marks a device dead when its thread ends, however it ends.
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

impl Worker {
    /// The thread's body: serves until told to stop, restarting itself after a panic.
    pub(super) fn run(mut self, commands: std_mpsc::Receiver<Command>, alive: Arc<AtomicBool>) {
        let _guard = AliveGuard(alive);
        loop {
            match std::panic::catch_unwind(AssertUnwindSafe(|| self.serve(&commands))) {
                Ok(()) => return,
                Err(panic) => self.restart(&panic_message(&*panic)),
            }
        }
    }

    /// After a panic: every attached session hears its renderer failed, and the worker starts
    /// over empty (their renderers attach again when their sessions restart them).
    fn restart(&mut self, reason: &str) {
        tracing::error!(device = %self.label, %reason, "render worker panicked; restarting it");
        self.metrics
            .render_worker_restarts
            .with_label_values(&[&self.label])
            .inc();
        for s in self.sessions.drain(..) {
            let _ = s.notices.send(RenderNotice::Failed(format!(
                "the render worker restarted: {reason}"
            )));
        }
    }

    fn serve(&mut self, commands: &std_mpsc::Receiver<Command>) {
        let mut next = Instant::now() + self.period;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            match commands.recv_timeout(wait) {
                Ok(Command::Attach(a)) => {
                    self.sessions.retain(|s| s.slot != a.slot);
                    self.sessions.push(*a);
                    continue;
                }
                Ok(Command::Detach(slot)) => {
                    self.sessions.retain(|s| s.slot != slot);
                    continue;
                }
                Ok(Command::Stop) | Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            let late = now.saturating_duration_since(next);
            if late >= self.period {
                // The last tick overran: the frames it should have made are dropped, not queued.
                let missed = (late.as_secs_f64() / self.period.as_secs_f64()) as u64;
                self.metrics
                    .render_dropped_frames
                    .with_label_values(&[&self.label])
                    .inc_by(missed * self.sessions.len() as u64);
                next = now;
            }
            next += self.period;
            if !self.sessions.is_empty() {
                self.tick();
            }
        }
    }

    fn tick(&mut self) {
        let mut failed: Vec<(u64, String)> = Vec::new();
        // Hear what each session said since the last tick.
        let mut params = Vec::with_capacity(self.sessions.len());
        for s in &mut self.sessions {
            match s.fault.swap(FAULT_NONE, Ordering::Relaxed) {
                FAULT_FRAME => failed.push((s.slot, "renderer fault injected".into())),
                // Outside any frame's render: the whole tick unwinds, as a bug in it would.
                FAULT_WORKER_PANIC => panic!("render worker fault injected"),
                _ => {}
            }
            s.watched = s.wants.jpeg() || s.wants.i420();
            if !s.watched() {
                // Nobody takes its frames: nothing to hear or draw, and no frame buffer to hold
                // (a session costs memory only while watched; its audio receiver just lags).
                if s.out.capacity() > 0 {
                    s.out = Vec::new();
                    s.src = Vec::new();
                }
                params.push((
                    0.0,
                    FrameParams {
                        t: 0.0,
                        open: 0.0,
                        shape: 0.0,
                        blink: 0.0,
                    },
                ));
                continue;
            }
            if s.seq == 0 {
                s.watched_from.get_or_insert_with(Instant::now);
            }
            let t = s.started.elapsed().as_secs_f32();
            // Where the voice knows its text, the mouth says it; else it follows the sound.
            loop {
                match s.audio.try_recv() {
                    Ok(chunk) => s.mouth.hear(&chunk.pcm, chunk.phoneme.as_deref()),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
            let (loud, open, shape) = s.mouth.frame();
            params.push((
                loud,
                FrameParams {
                    t,
                    open,
                    shape,
                    blink: blink_at(t, s.seed),
                },
            ));
        }
        if let Some(model) = &mut self.lipsync {
            // One batch for every speaking session on this device that anyone watches.
            let speaking: Vec<usize> = (0..self.sessions.len())
                .filter(|i| params[*i].0 > SPEAKING && self.sessions[*i].watched())
                .collect();
            for i in &speaking {
                let s = &mut self.sessions[*i];
                s.lip.get_or_insert_with(|| LipFace::of(&s.prepared));
            }
            let mels: Vec<Vec<f32>> = speaking
                .iter()
                .map(|i| {
                    self.mel
                        .compute(&self.sessions[*i].mouth.window().last(MEL_SAMPLES))
                })
                .collect();
            if !speaking.is_empty() {
                let batch: Vec<(&[f32], &LipFace)> = speaking
                    .iter()
                    .zip(&mels)
                    .filter_map(|(i, m)| self.sessions[*i].lip.as_ref().map(|l| (m.as_slice(), l)))
                    .collect();
                let started = Instant::now();
                let result = model.run(&batch);
                self.metrics
                    .render_batch_seconds
                    .with_label_values(&[&self.label])
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.render_batch_size.observe(batch.len() as f64);
                match result {
                    Ok(faces) => {
                        for (i, face) in speaking.iter().zip(faces) {
                            let s = &mut self.sessions[*i];
                            let (w, h) = (s.prepared.width(), s.prepared.height());
                            s.src.clear();
                            s.src
                                .extend_from_slice(s.prepared.base.as_slice().unwrap_or(&[]));
                            if let Some(lip) = &s.lip {
                                lip.paste(&face, &mut s.src, w, h);
                            }
                        }
                    }
                    Err(e) => {
                        for i in &speaking {
                            failed.push((self.sessions[*i].slot, e.to_string()));
                        }
                    }
                }
            }
            // The model moves the mouth; the built-in pass adds only idle motion.
            for (i, (_, p)) in params.iter_mut().enumerate() {
                p.open = 0.0;
                if !speaking.contains(&i) {
                    self.sessions[i].src.clear();
                }
            }
        }
        let out = Output {
            label: &self.label,
            jpeg_quality: self.jpeg_quality,
            metrics: &self.metrics,
        };
        // Every watched session's frame (render, I420, JPEG) on every core: rayon's pool spreads
        // them, and a panic in one comes back here, to unwind the tick as it would on this
        // thread. Sessions nobody watches are left out first, so a node of idle sessions wakes
        // no pool thread.
        let skip: Vec<u64> = failed.iter().map(|(slot, _)| *slot).collect();
        let due: Vec<(&mut Attached, &FrameParams)> = self
            .sessions
            .iter_mut()
            .zip(params.iter().map(|(_, p)| p))
            .filter(|(s, _)| s.watched() && !skip.contains(&s.slot))
            .collect();
        if !due.is_empty() {
            let frames: Vec<(u64, String)> = due
                .into_par_iter()
                .filter_map(|(s, p)| out.frame(s, p).err().map(|reason| (s.slot, reason)))
                .collect();
            failed.extend(frames);
        }
        for (slot, reason) in failed {
            if let Some(pos) = self.sessions.iter().position(|s| s.slot == slot) {
                let s = self.sessions.remove(pos);
                tracing::warn!(device = %self.label, slot, %reason, "render failed");
                let _ = s.notices.send(RenderNotice::Failed(reason));
            }
        }
    }
}

/// What making one frame needs from its worker.
struct Output<'a> {
    label: &'a str,
    jpeg_quality: u8,
    metrics: &'a Metrics,
}

impl Output<'_> {
    /// Renders, encodes (as its takers want) and hands out one frame of `s`, if anyone takes it.
    fn frame(&self, s: &mut Attached, p: &FrameParams) -> Result<(), String> {
        if !s.watched() {
            return Ok(());
        }
        let first = s.seq == 0;
        let (w, h) = (s.prepared.width(), s.prepared.height());
        let started = Instant::now();
        let prepared = s.prepared.clone();
        let src: &[u8] = if s.src.is_empty() {
            prepared.base.as_slice().unwrap_or(&[])
        } else {
            &s.src
        };
        s.out.resize(w * h * 3, 0);
        let out = &mut s.out;
        std::panic::catch_unwind(AssertUnwindSafe(|| render_into(&prepared, src, p, out)))
            .map_err(|_| "the renderer panicked".to_string())?;
        self.metrics
            .render_frame_seconds
            .with_label_values(&[self.label])
            .observe(started.elapsed().as_secs_f64());
        self.hand_out(s, w, h)?;
        self.metrics
            .render_frames
            .with_label_values(&[self.label])
            .inc();
        if first {
            let wanted = s.watched_from.unwrap_or(s.started);
            let _ = s.notices.send(RenderNotice::FirstFrame {
                after: wanted.elapsed(),
            });
        }
        s.seq += 1;
        Ok(())
    }

    /// The frame just drawn into `s.out`, to whoever takes it: JPEG for previews, I420 for
    /// transports, the raw RGB for both.
    fn hand_out(&self, s: &Attached, w: usize, h: usize) -> Result<(), String> {
        // JPEG only for preview clients; transports take the raw frame and encode it their way.
        let jpeg = if s.wants.jpeg() {
            let started = Instant::now();
            let jpeg = jpeg::encode(&s.out, w, h, self.jpeg_quality).map_err(|e| e.to_string())?;
            self.metrics
                .render_jpeg_seconds
                .observe(started.elapsed().as_secs_f64());
            Some(jpeg.into())
        } else {
            None
        };
        let _ = s.frames.send(VideoFrame {
            seq: s.seq,
            pts_ms: s.started.elapsed().as_millis() as u64,
            captured: Instant::now(),
            width: w as u32,
            height: h as u32,
            rgb: s.out.as_slice().into(),
            jpeg,
            i420: s
                .wants
                .i420()
                .then(|| I420::from_rgb(&s.out, w as u32, h as u32).map(Arc::new))
                .flatten(),
        });
        Ok(())
    }
}
