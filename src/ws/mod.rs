//! The WebSocket boundary: frames and their validation, and the channel actors.

pub mod control;
pub mod preview;
pub mod protocol;
