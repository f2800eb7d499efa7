//! avatar-supervisor: a self-hostable control plane for live AI-avatar sessions.
//!
//! Map of the modules, layer by layer; a module names only its own layer or those below, and no
//! files name each other in a circle (`make lint` checks both with `scripts/check_layers.py`, whose
//! map and the README's are this one).
//!
//! Wiring
//! - `main` (the binary) and this file.
//! - [`app`]: `Application::build` / `run_until_stopped`: the HTTP server and the actor system.
//! - [`cli`]: the command line (`serve`, `account …`, `migrate`).
//!
//! Boundaries (turn the outside world into calls of what is below)
//! - [`api`]: the HTTP boundary, one file per dialect; `api::error` is the one error shape.
//! - [`ws`]: the WebSocket boundary: the control and preview channels; `ws::protocol` is the one
//!   place session events become wire JSON.
//! - [`jobs`]: agent generation in the background.
//! - [`web`]: the browser side: the room page of a link (`/s/{id}`), the operator's console, and
//!   their files (`web/` at the repository root, embedded).
//! - [`state`]: what every handler gets (`AppState`).
//!
//! Actors (the supervision tree of DESIGN.md) and the session service
//! - [`actors`]: `Registry`, `Quota`, `Billing`, `RenderPool` (and its device workers), `Webhooks`,
//!   the `Session` actor with its children (`session/`), and the session service (`service/`:
//!   start/stop and admission, with its placement on other nodes and what it forwards to them).
//!
//! Clients and codecs
//! - [`store`]: the database (sea-orm, SQLite or PostgreSQL); every query lives there, and rows
//!   render their views.
//! - [`media`]: face detection, the avatar asset, the renderers, JPEG.
//! - [`voice`]: local TTS (espeak-ng), the ElevenLabs conversational-agent client, and resampling
//!   of other audio (a user's microphone) to the voices' 16 kHz.
//! - [`livekit`]: rooms and tokens (LiveKit's RoomService, or the local room).
//! - [`net`]: the one TLS configuration and HTTP client, and the private-address guard;
//!   [`crypto`]: secrets and signatures.
//! - [`cluster`]: messages between the nodes of one service, over NATS (adverts, requests).
//!
//! Foundation
//! - [`domain`]: plain value types: ids, session states and end reasons, events and status, the
//!   voice-agent config, the model asset, the views and URLs.
//! - [`config`]: layered settings; [`metrics`]: the Prometheus registry.

pub mod actors;
pub mod api;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod jobs;
pub mod livekit;
pub mod media;
pub mod metrics;
pub mod net;
pub mod state;
pub mod store;
pub mod voice;
pub mod web;
pub mod ws;
