//! The media path: face detection and the avatar asset at generation, and the renderers that turn
//! a session's audio into frames (see `actors::render_pool` for where they run).

pub mod audio;
pub mod avatar;
mod error;
pub mod face;
pub mod jpeg;
pub mod lipsync;
pub mod mesh;
pub mod onnx;
pub mod render;
pub mod visemes;
pub mod yuv;

pub use error::MediaError;

use std::sync::Arc;

use crate::config::MediaSettings;

/// What generation and rendering share: the runtime, the face detector and the face mesh, loaded
/// once at start.
pub struct MediaRuntime {
    pub onnx: onnx::Onnx,
    pub faces: Arc<face::FaceDetector>,
    pub mesher: Arc<mesh::FaceMesher>,
}

impl MediaRuntime {
    /// Loads onnxruntime, the face model and the face mesh, or says what to run to get them.
    pub fn load(settings: &MediaSettings) -> Result<Self, MediaError> {
        let onnx = onnx::Onnx::load(settings.onnxruntime_path())?;
        let model = settings.face_model_path();
        if !model.exists() {
            return Err(MediaError::Setup(format!(
                "the face model {} is missing: run `make setup`, then start the server with \
                 `make run` (or set media.face_model / AVS_MEDIA__FACE_MODEL)",
                model.display()
            )));
        }
        let faces = face::FaceDetector::load(&onnx, &model, settings.face_threshold as f32)?;
        let mesher = mesh::FaceMesher::load(&onnx, &settings.face_mesh_model_path())?;
        Ok(Self {
            onnx,
            faces: Arc::new(faces),
            mesher: Arc::new(mesher),
        })
    }
}

/// One rendered frame of a session's video, shared by every consumer: the raw picture for the
/// transports (which encode it once per session), and JPEG when a preview client wants it.
#[derive(Debug, Clone)]
pub struct VideoFrame {
    pub seq: u64,
    /// Milliseconds since the session's renderer started.
    pub pts_ms: u64,
    /// When it was drawn: the clock audio and video timestamps share.
    pub captured: std::time::Instant,
    pub width: u32,
    pub height: u32,
    /// RGB, 3 bytes a pixel, rows without padding.
    pub rgb: Arc<[u8]>,
    /// For a preview client, when one watches.
    pub jpeg: Option<Arc<[u8]>>,
    /// For a media transport (the LiveKit participant, the local room), when one takes frames.
    pub i420: Option<Arc<yuv::I420>>,
}

/// What a session's consumers want of each frame beyond the raw picture: counts of preview
/// clients (JPEG) and of transports (I420), so the render worker encodes only what is taken.
#[derive(Debug, Default)]
pub struct FrameWants {
    pub jpeg: std::sync::atomic::AtomicUsize,
    pub i420: std::sync::atomic::AtomicUsize,
}

impl FrameWants {
    pub fn jpeg(&self) -> bool {
        self.jpeg.load(std::sync::atomic::Ordering::Relaxed) > 0
    }
    pub fn i420(&self) -> bool {
        self.i420.load(std::sync::atomic::Ordering::Relaxed) > 0
    }
}

/// Holds one want of a kind for as long as it lives (a preview client, a transport).
pub struct Want {
    wants: Arc<FrameWants>,
    i420: bool,
}

impl Want {
    pub fn jpeg(wants: &Arc<FrameWants>) -> Self {
        wants
            .jpeg
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            wants: wants.clone(),
            i420: false,
        }
    }
    pub fn i420(wants: &Arc<FrameWants>) -> Self {
        wants
            .i420
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            wants: wants.clone(),
            i420: true,
        }
    }
}

impl Drop for Want {
    fn drop(&mut self) {
        let counter = if self.i420 {
            &self.wants.i420
        } else {
            &self.wants.jpeg
        };
        counter.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
