//! The RenderPool: the render devices (`render.devices`), their slots, and one worker thread per
//! device. A session holds a slot, not a model: each device's worker loads its model once, and on
//! every frame tick renders all the sessions attached to it (a lip-sync model in one batch), hands
//! each its frame, and goes back to sleep. A slow session cannot hold the others' ticks beyond one
//! frame, memory stays flat in the number of sessions (base frames are shared per avatar), and a
//! released slot is free at once.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{broadcast, mpsc};

use crate::config::RenderSettings;
use crate::jobs::generation::ModelAsset;
use crate::media::audio::{AudioWindow, MelSpec, MouthDriver, MEL_SAMPLES};
use crate::media::avatar::{self, AvatarModel};
use crate::media::lipsync::{LipFace, LipSync};
use crate::media::onnx::{Device, Onnx};
use crate::media::render::{blink_at, render_into, FrameParams, Prepared};
use crate::media::{jpeg, MediaError, VideoFrame};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::voice::PcmChunk;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    #[error("no render slot is free")]
    NoCapacity,
    #[error("the avatar cannot be rendered: {0}")]
    Avatar(String),
    #[error("the render device is gone")]
    DeviceGone,
}

/// A session's claim on one slot of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotLease {
    pub slot: u64,
    pub device: usize,
    pub label: String,
}

/// Claims a slot on the device with the most free ones.
#[derive(Message)]
#[rtype(result = "Result<SlotLease, RenderError>")]
pub struct Acquire {
    pub session_id: String,
}

/// Gives a slot back (and detaches whatever renders on it). Safe to send twice.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release(pub SlotLease);

/// A session's base frame for an agent's avatar at an aspect ratio; shared while anyone uses it.
#[derive(Message)]
#[rtype(result = "Result<Arc<Prepared>, RenderError>")]
pub struct Prepare {
    pub model_asset_id: String,
    pub aspect_ratio: String,
}

/// What a worker tells a session's renderer.
#[derive(Debug, Clone)]
pub enum RenderNotice {
    /// The first frame is out, this long after `Attach`.
    FirstFrame { after: Duration },
    /// Rendering failed; the session's renderer is detached.
    Failed(String),
}

/// Starts rendering a session on its slot's device.
#[derive(Message)]
#[rtype(result = "Result<(), RenderError>")]
pub struct Attach {
    pub lease: SlotLease,
    pub session_id: String,
    pub prepared: Arc<Prepared>,
    pub audio: broadcast::Receiver<PcmChunk>,
    pub frames: broadcast::Sender<VideoFrame>,
    pub notices: mpsc::UnboundedSender<RenderNotice>,
    /// Set to make rendering fail as if it crashed (fault injection).
    pub fault: Arc<AtomicBool>,
}

/// Stops rendering on a slot (the slot stays claimed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Detach {
    pub slot: u64,
}

/// Slots in use and in all, per device.
#[derive(Message)]
#[rtype(result = "Vec<DeviceStatus>")]
pub struct PoolStatus;

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceStatus {
    pub device: String,
    pub renderer: &'static str,
    pub slots: usize,
    pub in_use: usize,
}

struct DeviceState {
    label: String,
    renderer: &'static str,
    slots: usize,
    leases: HashMap<u64, String>,
    worker: std_mpsc::Sender<Command>,
}

pub struct RenderPool {
    devices: Vec<DeviceState>,
    next_slot: u64,
    store: Store,
    settings: RenderSettings,
    prepared: HashMap<(String, String), Weak<Prepared>>,
    metrics: Metrics,
}

impl RenderPool {
    /// Starts a worker per device; loads the lip-sync model on each if one is configured.
    pub fn new(
        settings: &RenderSettings,
        onnx: &Onnx,
        store: Store,
        metrics: Metrics,
    ) -> Result<Self, MediaError> {
        let devices = Device::parse_list(&settings.devices).map_err(MediaError::Setup)?;
        if settings.fps == 0 || settings.fps > 60 {
            return Err(MediaError::Setup("render.fps must be within 1..=60".into()));
        }
        let mut states = Vec::new();
        for (index, device) in devices.into_iter().enumerate() {
            let label = if index > 0 && matches!(device, Device::Cpu) {
                format!("cpu#{index}")
            } else {
                device.label()
            };
            let lipsync = if settings.lipsync_model.is_empty() {
                None
            } else {
                Some(LipSync::load(
                    onnx,
                    settings.lipsync_model.as_ref(),
                    device,
                )?)
            };
            let renderer = if lipsync.is_some() {
                "lipsync"
            } else {
                "builtin"
            };
            let (tx, rx) = std_mpsc::channel();
            let worker = Worker {
                label: label.clone(),
                period: Duration::from_secs_f64(1.0 / settings.fps as f64),
                jpeg_quality: settings.jpeg_quality,
                lipsync,
                mel: MelSpec::new(),
                sessions: Vec::new(),
                metrics: metrics.clone(),
            };
            std::thread::Builder::new()
                .name(format!("render-{label}"))
                .spawn(move || worker.run(rx))
                .map_err(|e| MediaError::Setup(format!("cannot start a render worker: {e}")))?;
            metrics
                .render_slots
                .with_label_values(&[&label, "total"])
                .set(settings.slots_per_device as i64);
            metrics
                .render_slots
                .with_label_values(&[&label, "in_use"])
                .set(0);
            states.push(DeviceState {
                label,
                renderer,
                slots: settings.slots_per_device,
                leases: HashMap::new(),
                worker: tx,
            });
        }
        Ok(Self {
            devices: states,
            next_slot: 1,
            store,
            settings: settings.clone(),
            prepared: HashMap::new(),
            metrics,
        })
    }

    fn gauge(&self, device: usize) {
        let d = &self.devices[device];
        self.metrics
            .render_slots
            .with_label_values(&[&d.label, "in_use"])
            .set(d.leases.len() as i64);
    }
}

impl Actor for RenderPool {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        for d in &self.devices {
            let _ = d.worker.send(Command::Stop);
        }
    }
}

impl Handler<Acquire> for RenderPool {
    type Result = Result<SlotLease, RenderError>;

    fn handle(&mut self, msg: Acquire, _: &mut Self::Context) -> Self::Result {
        self.metrics.actor_message("render_pool", "acquire");
        let best = self
            .devices
            .iter()
            .enumerate()
            .filter(|(_, d)| d.leases.len() < d.slots)
            .max_by_key(|(i, d)| (d.slots - d.leases.len(), usize::MAX - i))
            .map(|(i, _)| i);
        let Some(device) = best else {
            self.metrics
                .admissions_rejected
                .with_label_values(&["no_capacity"])
                .inc();
            return Err(RenderError::NoCapacity);
        };
        let slot = self.next_slot;
        self.next_slot += 1;
        self.devices[device].leases.insert(slot, msg.session_id);
        self.gauge(device);
        Ok(SlotLease {
            slot,
            device,
            label: self.devices[device].label.clone(),
        })
    }
}

impl Handler<Release> for RenderPool {
    type Result = ();

    fn handle(&mut self, Release(lease): Release, _: &mut Self::Context) {
        self.metrics.actor_message("render_pool", "release");
        if let Some(d) = self.devices.get_mut(lease.device) {
            let _ = d.worker.send(Command::Detach(lease.slot));
            if d.leases.remove(&lease.slot).is_some() {
                self.gauge(lease.device);
            }
        }
    }
}

impl Handler<Prepare> for RenderPool {
    type Result = ResponseActFuture<Self, Result<Arc<Prepared>, RenderError>>;

    fn handle(&mut self, msg: Prepare, _: &mut Self::Context) -> Self::Result {
        self.metrics.actor_message("render_pool", "prepare");
        let key = (msg.model_asset_id.clone(), msg.aspect_ratio.clone());
        if let Some(ready) = self.prepared.get(&key).and_then(Weak::upgrade) {
            return Box::pin(fut::ready(Ok(ready)));
        }
        let store = self.store.clone();
        let max_side = self.settings.max_side;
        let load = async move {
            let bad = |what: String| RenderError::Avatar(what);
            let model = store
                .asset(&msg.model_asset_id)
                .await
                .map_err(|e| bad(format!("model could not be read ({e})")))?
                .ok_or_else(|| bad("the agent's model asset is gone".into()))?;
            let described: ModelAsset<String, AvatarModel> = serde_json::from_slice(&model.data)
                .map_err(|e| bad(format!("model asset is not valid ({e})")))?;
            let crop = store
                .asset(&described.avatar_asset_id)
                .await
                .map_err(|e| bad(format!("avatar could not be read ({e})")))?
                .ok_or_else(|| bad("the agent's avatar asset is gone".into()))?;
            let aspect = msg.aspect_ratio;
            tokio::task::spawn_blocking(move || {
                let image = image::load_from_memory(&crop.data)
                    .map_err(|e| bad(format!("avatar image is not valid ({e})")))?
                    .to_rgb8();
                let (model, base) = avatar::prepare(&described.model, &image, &aspect, max_side);
                Ok(Arc::new(Prepared::new(model, base)))
            })
            .await
            .map_err(|_| RenderError::Avatar("preparing the avatar crashed".into()))?
        };
        Box::pin(load.into_actor(self).map(move |result, act, _| {
            if let Ok(prepared) = &result {
                act.prepared.retain(|_, weak| weak.strong_count() > 0);
                act.prepared.insert(key, Arc::downgrade(prepared));
            }
            result
        }))
    }
}

impl Handler<Attach> for RenderPool {
    type Result = Result<(), RenderError>;

    fn handle(&mut self, msg: Attach, _: &mut Self::Context) -> Self::Result {
        self.metrics.actor_message("render_pool", "attach");
        let device = self
            .devices
            .get(msg.lease.device)
            .filter(|d| d.leases.contains_key(&msg.lease.slot))
            .ok_or(RenderError::DeviceGone)?;
        let (w, h) = (msg.prepared.width(), msg.prepared.height());
        let seed = msg.session_id.bytes().fold(2_166_136_261u32, |h, b| {
            (h ^ b as u32).wrapping_mul(16_777_619)
        });
        let attached = Attached {
            slot: msg.lease.slot,
            lip: None,
            prepared: msg.prepared,
            audio: msg.audio,
            window: AudioWindow::default(),
            mouth: MouthDriver::default(),
            frames: msg.frames,
            notices: msg.notices,
            fault: msg.fault,
            started: Instant::now(),
            seq: 0,
            seed,
            src: Vec::new(),
            out: vec![0; w * h * 3],
        };
        device
            .worker
            .send(Command::Attach(Box::new(attached)))
            .map_err(|_| RenderError::DeviceGone)
    }
}

impl Handler<Detach> for RenderPool {
    type Result = ();

    fn handle(&mut self, msg: Detach, _: &mut Self::Context) {
        for d in &self.devices {
            let _ = d.worker.send(Command::Detach(msg.slot));
        }
    }
}

impl Handler<PoolStatus> for RenderPool {
    type Result = MessageResult<PoolStatus>;

    fn handle(&mut self, _: PoolStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.devices
                .iter()
                .map(|d| DeviceStatus {
                    device: d.label.clone(),
                    renderer: d.renderer,
                    slots: d.slots,
                    in_use: d.leases.len(),
                })
                .collect(),
        )
    }
}

enum Command {
    Attach(Box<Attached>),
    Detach(u64),
    Stop,
}

/// A session being rendered on a worker.
struct Attached {
    slot: u64,
    prepared: Arc<Prepared>,
    /// The lip-sync model's view of the face, made on first use.
    lip: Option<LipFace>,
    audio: broadcast::Receiver<PcmChunk>,
    window: AudioWindow,
    mouth: MouthDriver,
    frames: broadcast::Sender<VideoFrame>,
    notices: mpsc::UnboundedSender<RenderNotice>,
    fault: Arc<AtomicBool>,
    started: Instant,
    seq: u64,
    seed: u32,
    /// The frame's source when a lip-sync model pasted a mouth into a copy of the base.
    src: Vec<u8>,
    out: Vec<u8>,
}

impl Attached {
    /// Someone takes its frames (a preview, a room publisher). Unwatched, nothing is drawn,
    /// except the first frame, so that a session's time to first frame is known.
    fn watched(&self) -> bool {
        self.seq == 0 || self.frames.receiver_count() > 0
    }
}

struct Worker {
    label: String,
    period: Duration,
    jpeg_quality: u8,
    lipsync: Option<LipSync>,
    mel: MelSpec,
    sessions: Vec<Attached>,
    metrics: Metrics,
}

/// Loudness above which a lip-sync model is asked for a mouth.
const SPEAKING: f32 = 0.02;

impl Worker {
    fn run(mut self, commands: std_mpsc::Receiver<Command>) {
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
            if s.fault.load(Ordering::Relaxed) {
                failed.push((s.slot, "renderer fault injected".into()));
            }
            loop {
                match s.audio.try_recv() {
                    Ok(chunk) => s.window.push(&chunk),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
            let (loud, bright) = s.window.features();
            s.window.tick();
            let (open, shape) = s.mouth.step(loud, bright);
            let t = s.started.elapsed().as_secs_f32();
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
                        .compute(&self.sessions[*i].window.last(MEL_SAMPLES))
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
        for (s, (_, p)) in self.sessions.iter_mut().zip(&params) {
            if failed.iter().any(|(slot, _)| *slot == s.slot) {
                continue;
            }
            if let Err(reason) = out.frame(s, p) {
                failed.push((s.slot, reason));
            }
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
    /// Renders, encodes (if anyone watches) and hands out one frame of `s`.
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
        let out = &mut s.out;
        std::panic::catch_unwind(AssertUnwindSafe(|| render_into(&prepared, src, p, out)))
            .map_err(|_| "the renderer panicked".to_string())?;
        self.metrics
            .render_frame_seconds
            .with_label_values(&[self.label])
            .observe(started.elapsed().as_secs_f64());
        {
            let started = Instant::now();
            let jpeg = jpeg::encode(&s.out, w, h, self.jpeg_quality).map_err(|e| e.to_string())?;
            self.metrics
                .render_jpeg_seconds
                .observe(started.elapsed().as_secs_f64());
            let _ = s.frames.send(VideoFrame {
                seq: s.seq,
                pts_ms: s.started.elapsed().as_millis() as u64,
                width: w as u32,
                height: h as u32,
                jpeg: jpeg.into(),
            });
        }
        self.metrics
            .render_frames
            .with_label_values(&[self.label])
            .inc();
        if first {
            let _ = s.notices.send(RenderNotice::FirstFrame {
                after: s.started.elapsed(),
            });
        }
        s.seq += 1;
        Ok(())
    }
}
