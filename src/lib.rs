//! avatar-supervisor: a self-hostable control plane for live AI-avatar sessions.
//!
//! Map of the modules (the supervision tree of DESIGN.md is `actors/`):
//! - [`app`]: `Application::build` / `run_until_stopped`: HTTP server + actor system.
//! - [`cli`], [`config`]: the command line and layered settings.
//! - [`api`]: the HTTP boundary, one file per dialect; `api::error` is the one error shape.
//! - [`actors`]: `Registry`, `Quota`, `Webhooks`, and `session/` (the Session actor, its pure
//!   state machine, restart policy, messages and its `Room` child).
//! - [`store`]: the database (sea-orm, SQLite or PostgreSQL); every query lives there.
//! - [`jobs`]: agent generation in the background.
//! - [`livekit`]: rooms and tokens (LiveKit RoomService, or the local room).
//! - [`net`]: the HTTP client and the private-address guard; [`crypto`], [`ids`]; [`metrics`].

pub mod actors;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod ids;
pub mod jobs;
pub mod livekit;
pub mod media;
pub mod metrics;
pub mod net;
pub mod state;
pub mod store;
pub mod voice;
pub mod ws;
