//! The RenderPool: the render devices (`render.devices`), their slots, and one worker thread per
//! device. A session holds a slot, not a model: each device's worker loads its model once, and on
//! every frame tick renders all the sessions attached to it (a lip-sync model in one batch), hands
//! each its frame, and goes back to sleep. A slow session cannot hold the others' ticks beyond one
//! frame, memory stays flat in the number of sessions (base frames are shared per avatar), and a
//! released slot is free at once.

mod avatars;
mod error;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::FutureExt;
use tokio::sync::{broadcast, mpsc};

use crate::config::RenderSettings;
use crate::domain::agent::ModelAsset;
use crate::media::audio::MelSpec;
use crate::media::avatar::{self, AvatarModel};
use crate::media::lipsync::LipSync;
use crate::media::mesh::FaceMesher;
use crate::media::onnx::{Device, Onnx};
use crate::media::render::Prepared;
use crate::media::visemes::Mouth;
use crate::media::{FrameWants, MediaError, VideoFrame};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::voice::Voiced;
use avatars::Avatars;
pub use error::RenderError;
use worker::{Attached, Command, Worker};
pub use worker::{RenderNotice, FAULT_FRAME, FAULT_NONE, FAULT_WORKER_PANIC};

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

/// A session's base frame for an agent's avatar at an aspect ratio; shared while anyone uses it,
/// and kept warm a while after (`avatars.rs`).
#[derive(Message)]
#[rtype(result = "Result<Arc<Prepared>, RenderError>")]
pub struct Prepare {
    pub model_asset_id: String,
    pub aspect_ratio: String,
}

/// Starts rendering a session on its slot's device.
#[derive(Message)]
#[rtype(result = "Result<(), RenderError>")]
pub struct Attach {
    pub lease: SlotLease,
    pub session_id: String,
    pub prepared: Arc<Prepared>,
    pub audio: broadcast::Receiver<Voiced>,
    pub frames: broadcast::Sender<VideoFrame>,
    pub notices: mpsc::UnboundedSender<RenderNotice>,
    /// An injected fault (`FAULT_*`): for operators checking supervision, and for tests.
    pub fault: Arc<AtomicU8>,
    /// Preview clients wanting JPEG frames.
    pub wants: Arc<FrameWants>,
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

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeviceStatus {
    pub device: String,
    pub renderer: &'static str,
    pub slots: usize,
    pub in_use: usize,
    pub alive: bool,
}

struct DeviceState {
    label: String,
    renderer: &'static str,
    slots: usize,
    leases: HashMap<u64, String>,
    worker: std_mpsc::Sender<Command>,
    /// False once the worker's thread has ended: no slot is handed out on this device then.
    alive: Arc<AtomicBool>,
}

pub struct RenderPool {
    devices: Vec<DeviceState>,
    next_slot: u64,
    store: Store,
    settings: RenderSettings,
    prepared: Avatars,
    /// Meshes the avatars made before the mesh existed, when a session first prepares them.
    mesher: Arc<FaceMesher>,
    metrics: Metrics,
}

impl RenderPool {
    /// Starts a worker per device; loads the lip-sync model on each if one is configured.
    pub fn new(
        settings: &RenderSettings,
        onnx: &Onnx,
        mesher: Arc<FaceMesher>,
        store: Store,
        metrics: Metrics,
    ) -> Result<Self, MediaError> {
        let devices = Device::parse_list(&settings.devices).map_err(MediaError::Setup)?;
        if settings.fps == 0 || settings.fps > 60 {
            return Err(MediaError::Setup("render.fps must be within 1..=60".into()));
        }
        // Every device's workers have their sessions' frames drawn on rayon's pool, a thread a
        // core, named so a profile shows them. Already built (a second server in one process,
        // as in tests): that one serves.
        let _ = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("render-draw-{i}"))
            .build_global();
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
            let alive = Arc::new(AtomicBool::new(true));
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
                .spawn({
                    let alive = alive.clone();
                    move || worker.run(rx, alive)
                })
                .map_err(|e| MediaError::Setup(format!("cannot start a render worker: {e}")))?;
            metrics
                .render_slots
                .with_label_values(&[&label, "total"])
                .set(settings.slots() as i64);
            metrics
                .render_slots
                .with_label_values(&[&label, "in_use"])
                .set(0);
            metrics.zero_device(&label);
            states.push(DeviceState {
                label,
                renderer,
                slots: settings.slots(),
                leases: HashMap::new(),
                worker: tx,
                alive,
            });
        }
        Ok(Self {
            devices: states,
            next_slot: 1,
            store,
            settings: settings.clone(),
            prepared: Avatars::default(),
            mesher,
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
            .filter(|(_, d)| d.leases.len() < d.slots && d.alive.load(Ordering::Acquire))
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
        if let Some(ready) = self.prepared.get(&key) {
            return Box::pin(fut::ready(Ok(ready)));
        }
        if let Some(loading) = self.prepared.loading(&key) {
            return Box::pin(loading.into_actor(self));
        }
        let store = self.store.clone();
        let max_side = self.settings.max_side;
        let mesher = self.mesher.clone();
        let load = async move {
            let bad = unrenderable;
            let model = store
                .asset(&msg.model_asset_id)
                .await
                .map_err(|e| bad("the model could not be read", &e))?
                .ok_or_else(|| bad("the agent's model asset is gone", &"missing"))?;
            let mut described: ModelAsset<String, AvatarModel> =
                serde_json::from_slice(&model.data)
                    .map_err(|e| bad("the model asset is not valid", &e))?;
            let crop = store
                .asset(&described.avatar_asset_id)
                .await
                .map_err(|e| bad("the avatar could not be read", &e))?
                .ok_or_else(|| bad("the agent's avatar asset is gone", &"missing"))?;
            let aspect = msg.aspect_ratio;
            let (prepared, upgraded) = tokio::task::spawn_blocking(move || {
                let image = image::load_from_memory(&crop.data)
                    .map_err(|e| bad("the avatar image is not valid", &e))?
                    .to_rgb8();
                // Made before the mesh: meshed now, and the stored model upgraded with it (no
                // new generation, no charge).
                let upgraded = described.model.mesh.is_none().then(|| {
                    described.model.mesh = Some(mesher.mesh_or_why(&image, &described.model.face));
                    described.model.version = avatar::MODEL_VERSION;
                    serde_json::to_vec(&described)
                });
                let (model, base) = avatar::prepare(&described.model, &image, &aspect, max_side);
                Ok::<_, RenderError>((Arc::new(Prepared::new(model, base)), upgraded))
            })
            .await
            .map_err(|_| RenderError::Avatar("preparing the avatar crashed".into()))??;
            match upgraded {
                Some(Ok(json)) => {
                    match store.upgrade_model_asset(&msg.model_asset_id, json).await {
                        Ok(true) => {
                            tracing::info!(asset = %msg.model_asset_id, "an avatar model made before the face mesh now carries it")
                        }
                        // Gone meanwhile (the agent deleted): nothing to upgrade.
                        Ok(false) => {}
                        // The session renders from the mesh anyway; the next start tries again.
                        Err(e) => tracing::warn!(error = %e, "an avatar model was not upgraded"),
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "an upgraded avatar model did not serialise")
                }
                None => {}
            }
            Ok(prepared)
        };
        // Starts for the same avatar meanwhile wait for this one; the first to see it done keeps it.
        let loading = load.boxed_local().shared();
        self.prepared.start_loading(key.clone(), loading.clone());
        Box::pin(loading.into_actor(self).map(move |result, act, _| {
            act.prepared.done(&key, &result);
            result
        }))
    }
}

/// The client sees a stable sentence; what went wrong goes to the log.
fn unrenderable(what: &str, detail: &dyn std::fmt::Display) -> RenderError {
    tracing::error!(%detail, "avatar not renderable: {what}");
    RenderError::Avatar(what.to_string())
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
        let seed = msg.session_id.bytes().fold(2_166_136_261u32, |h, b| {
            (h ^ b as u32).wrapping_mul(16_777_619)
        });
        let attached = Attached {
            slot: msg.lease.slot,
            lip: None,
            prepared: msg.prepared,
            audio: msg.audio,
            mouth: Mouth::default(),
            frames: msg.frames,
            notices: msg.notices,
            fault: msg.fault,
            wants: msg.wants,
            started: Instant::now(),
            watched_from: None,
            watched: false,
            seq: 0,
            seed,
            src: Vec::new(),
            // Allocated when first watched, freed when nobody watches.
            out: Vec::new(),
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
                    alive: d.alive.load(Ordering::Acquire),
                })
                .collect(),
        )
    }
}
