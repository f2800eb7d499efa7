//! Plain value types every layer shares, importing nothing of the crate: identifiers (generated and
//! parsed), session states and end reasons, the events a session emits, the voice-agent config, the
//! model asset, and the views clients and webhooks see. No I/O, no actors, no wire format choices
//! beyond serde shapes that are the stored or public form of a value.

pub mod agent;
pub mod events;
pub mod ids;
pub mod session;
pub mod time;
pub mod views;
