//! Test support: faithful fakes of the third parties the supervisor talks to.
//!
//! Every fake is a real HTTP server on `127.0.0.1:0`, started from inside an `#[actix_web::test]`
//! and stopped either explicitly (`stop().await`) or when it is dropped.

// Not every test binary uses every helper.
#![allow(dead_code)]

pub mod elevenlabs;
pub mod livekit;
/// The fake LiveKit server that does real WebRTC (aiortc), shared with `avs-livekit-ffi`'s tests.
#[path = "../../crates/livekit-ffi/tests/support/fake.rs"]
pub mod livekit_media;
/// A participant of a real LiveKit room (LiveKit's Python SDK), shared with `avs-livekit-ffi`.
#[path = "../../crates/livekit-ffi/tests/support/peer.rs"]
pub mod livekit_peer;
/// LiveKit's own server (`.setup/livekit-server/`), shared with `avs-livekit-ffi`'s tests.
#[path = "../../crates/livekit-ffi/tests/support/server.rs"]
pub mod livekit_server;
pub mod webhook_sink;

use std::sync::Arc;
use std::time::Duration;

/// An HTTP client for talking to the fakes (and to the app under test) over plain `http://`.
///
/// reqwest is built with `rustls-no-provider` here, so `Client::builder().build()` panics for want
/// of a crypto provider even when no TLS is ever used; hand it a ring-backed config, as
/// `livekit-api` and the app itself do.
pub fn http_client() -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports rustls' default protocol versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        // A test must never hang on a fake that stopped answering.
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a reqwest client with a preconfigured rustls backend")
}
