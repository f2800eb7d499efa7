//! Hand-written sea-orm entities, one per table of `migrations/`.

pub mod account;
pub mod agent;
pub mod agent_revision;
pub mod api_key;
pub mod asset;
pub mod link;
pub mod session;
pub mod usage;
pub mod webhook;
