//! The media path: face detection and the avatar asset at generation, and the renderers that turn
//! a session's audio into frames (see `actors::render_pool` for where they run).

pub mod audio;
pub mod avatar;
pub mod face;
pub mod jpeg;
pub mod lipsync;
pub mod onnx;
pub mod render;

#[derive(Debug, Clone, thiserror::Error)]
pub enum MediaError {
    /// Something `make setup` provides is missing or unusable: the server cannot start.
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Model(String),
}
