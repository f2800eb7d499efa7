//! Why the render pool refuses or fails.

#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    #[error("no render slot is free")]
    NoCapacity,
    #[error("the avatar cannot be rendered: {0}")]
    Avatar(String),
    #[error("the render device is gone")]
    DeviceGone,
}
