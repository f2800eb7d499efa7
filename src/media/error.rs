//! The one error of the media path (a leaf: every media file names it).

#[derive(Debug, Clone, thiserror::Error)]
pub enum MediaError {
    /// Something `make setup` provides is missing or unusable: the server cannot start.
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Model(String),
}
