//! The integration suite: one binary, a module per feature. Every test runs the real server on
//! port 0, on SQLite and on PostgreSQL (`on_both_databases!`).

#[path = "../support/mod.rs"]
mod support;

mod helpers;

mod agents;
mod auth;
mod billing;
mod borrowed;
mod cli;
mod cluster;
mod connect;
mod control;
mod deployments;
mod failover;
mod links;
mod livekit;
mod local_room;
mod media;
mod netns;
mod openapi;
mod ops;
mod quota;
mod sessions;
mod voice;
mod web;
mod webhooks;
