//! The supervision tree: Registry, Quota and Webhooks (one each), and a Session per live session.

pub mod billing;
pub mod quota;
pub mod registry;
pub mod render_pool;
pub mod service;
pub mod session;
pub mod webhooks;
