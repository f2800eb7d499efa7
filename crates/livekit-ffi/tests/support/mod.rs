//! Paths the tests share. The crate lives in `<repo>/crates/livekit-ffi`; `$AVS_REPO_ROOT`
//! overrides `<repo>` (e.g. while the crate is developed outside the workspace).
#![allow(dead_code)] // each test binary uses a part

use std::path::PathBuf;

pub mod fake;
pub mod peer;
pub mod server;

pub fn repo_root() -> PathBuf {
    match std::env::var_os("AVS_REPO_ROOT") {
        Some(root) => PathBuf::from(root),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."),
    }
}

pub fn library_path() -> PathBuf {
    match std::env::var_os("AVS_LIVEKIT_LIB") {
        Some(path) => PathBuf::from(path),
        None => repo_root().join(".setup/livekit/liblivekit_ffi.so"),
    }
}

/// Logs (the library's included, target `livekit_ffi`) only when `TEST_LOG` is set, e.g.
/// `TEST_LOG=livekit_ffi=debug,avs_livekit_ffi=debug`.
pub fn init_logs() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}
