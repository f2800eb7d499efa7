//! Tests that need a network namespace of their own: real WebRTC between this server and headless
//! Chromium. Chromium sends packets on the machine's own network interfaces even when told not
//! to, and WebRTC stacks ignore loopback unless told; inside the namespace `scripts/test.sh`
//! makes (only `lo` and an inner veth pair), nothing can leave the machine. The script runs these
//! in a second pass (`AVS_NETNS=1 ip netns exec … cargo test --test api -- netns::`); the first
//! pass skips them. They run on SQLite: PostgreSQL is not reachable from inside.

mod browser;
mod livekit;

/// Fails, saying how to run it, when a netns test runs outside that namespace.
#[track_caller]
pub fn require_netns() {
    assert!(
        std::env::var("AVS_NETNS").as_deref() == Ok("1"),
        "the netns:: tests drive a real browser over WebRTC and must run inside the network \
         namespace that scripts/test.sh makes: run them with `make test` (or `bash \
         scripts/test.sh`), not with cargo alone"
    );
}
