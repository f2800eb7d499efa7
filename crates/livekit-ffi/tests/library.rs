//! The real library without a network: loading, refusing, failing to connect without leaking.
//! Needs `.setup/livekit/liblivekit_ffi.so` (`make setup`; `$AVS_LIVEKIT_LIB` overrides the path).

mod support;

use std::time::{Duration, Instant};

use avs_livekit_ffi::{join, live_handles, AvatarOptions, FfiLibrary, LkError};

#[tokio::test(flavor = "current_thread")]
async fn load_refuse_and_fail_to_connect_without_leaking() {
    let lib = FfiLibrary::load(support::library_path()).expect("the library loads");
    let again = FfiLibrary::load(support::library_path()).expect("loading twice is fine");
    assert!(
        std::sync::Arc::ptr_eq(&lib, &again),
        "one library per process"
    );
    assert!(matches!(
        FfiLibrary::load("/dev/null"),
        Err(LkError::AlreadyLoaded { .. })
    ));

    let opts = AvatarOptions {
        width: 512,
        height: 512,
        fps: 25,
        max_video_bitrate: 800_000,
        audio_sample_rate: 16_000,
        audio_queue_ms: 200,
        receive_microphones: true,
        byte_stream_topics: Vec::new(),
    };
    let bad = AvatarOptions {
        audio_queue_ms: 25,
        ..opts.clone()
    };
    assert!(matches!(
        join(&lib, "ws://127.0.0.1:9", "t", bad).await,
        Err(LkError::InvalidArgument(_))
    ));

    // Nothing listens on the discard port: the library's connect fails, and the sources and tracks
    // made before it are released.
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        join(&lib, "ws://127.0.0.1:9", "not-a-token", opts),
    )
    .await
    .expect("a refused connection fails within a minute");
    match result {
        Err(LkError::Connect(reason)) => println!(
            "connect failed after {:.1} s: {reason}",
            started.elapsed().as_secs_f64()
        ),
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert_eq!(live_handles(), 0, "every handle was released");
}
