//! Tests that need a network namespace of their own: real WebRTC between this server and headless
//! Chromium. Chromium sends packets on the machine's own network interfaces even when told not
//! to, and WebRTC stacks ignore loopback unless told; inside the namespace `scripts/test.sh`
//! makes (only `lo` and an inner veth pair), nothing can leave the machine. The script runs these
//! in a second pass (`AVS_NETNS=1 ip netns exec … cargo test --test api -- netns::`); the first
//! pass skips them. They run on SQLite, but for the one with two nodes: it reaches PostgreSQL
//! through its socket and a NATS of the namespace's own (`scripts/netns_run.sh` sets both up).

mod browser;
mod livekit;

/// Whether this run is inside the namespace `scripts/test.sh` makes. Outside it a netns test skips
/// itself, saying so and how to run it (`cargo test` alone passes); `make test` runs them inside.
#[track_caller]
pub fn in_netns() -> bool {
    let inside = std::env::var("AVS_NETNS").as_deref() == Ok("1");
    if !inside {
        eprintln!(
            "skipped at {}: the netns:: tests drive a real browser and LiveKit over WebRTC and run \
             only inside the network namespace that scripts/test.sh makes: run them with `make \
             test` (or `bash scripts/netns_run.sh cargo test --test api -- netns::`)",
            std::panic::Location::caller()
        );
    }
    inside
}
