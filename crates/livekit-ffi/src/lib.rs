//! # avs-livekit-ffi: the avatar as a participant of a LiveKit room
//!
//! The avatar joins a LiveKit room, publishes a camera track (VP8, from I420 frames) and a
//! microphone track (mono PCM), and receives every remote microphone as mono PCM at the same rate.
//! WebRTC is LiveKit's own: `liblivekit_ffi.so` from the PyPI wheel `livekit` 1.2.1 (libwebrtc
//! inside), loaded at run time from the path `make setup` unpacks it to
//! (`.setup/livekit/liblivekit_ffi.so`): the `livekit` Rust crate cannot be built here (its build
//! downloads libwebrtc), and its FFI build ships ready in that wheel. Four C functions, protobuf
//! messages both ways, answers to slow requests as events through one process-wide callback.
//!
//! ```no_run
//! # async fn demo() -> Result<(), avs_livekit_ffi::LkError> {
//! use avs_livekit_ffi::{join, AvatarOptions, FfiLibrary, RoomEvent};
//! let lib = FfiLibrary::load(".setup/livekit/liblivekit_ffi.so")?;
//! let opts = AvatarOptions { width: 512, height: 512, fps: 25, max_video_bitrate: 800_000,
//!                            audio_sample_rate: 16_000, audio_queue_ms: 200,
//!                            receive_microphones: true, byte_stream_topics: vec![] };
//! let (room, mut events) = join(&lib, "wss://lk.example", "<avatar token>", opts).await?;
//! let (y, u, v) = (vec![0u8; 512 * 512], vec![128u8; 256 * 256], vec![128u8; 256 * 256]);
//! room.capture_video_i420(512, 512, &y, &u, &v, 0)?;   // returns at once
//! room.capture_audio(&[0i16; 320]).await?;             // paced by the library's queue
//! room.clear_audio_buffer()?;                          // interrupt
//! while let Some(event) = events.recv().await {
//!     if let RoomEvent::UserAudio { identity, pcm } = event { /* 20 ms of `identity` */ }
//! #   break;
//! }
//! room.close().await?;                                 // unpublish, disconnect, release
//! # Ok(()) }
//! ```
//!
//! ## Map
//! Each file names only those listed below it (no two files name each other).
//! - `data`: what a LiveKit Agents worker speaks to an avatar besides media: RPC (register a
//!   method, answer its calls, call a remote participant's) and incoming byte streams.
//! - `room`: [`join`], [`AvatarRoom`] (capture, interrupt, stats, close).
//! - `load`: [`FfiLibrary::load`]: loading the library once per process, and starting the
//!   dispatcher thread.
//! - `dispatcher`: the one thread that decodes events, answers waiting requests by async id,
//!   and keeps each room's remote side (subscribing microphones, opening their audio streams,
//!   releasing every handle an event hands over).
//! - `shared`: what a room's owner and the dispatcher both hold (the room's shared state, its
//!   handle).
//! - `events`: [`RoomEvent`] and [`RpcInvocation`], what the owner hears of its room.
//! - `ffi`: the library's C ABI (four functions), one synchronous request, the process-wide
//!   event callback (it only copies bytes into the dispatcher's input channel); and the handles:
//!   each library handle has one owner whose `Drop` releases it; [`live_handles`] counts them (a
//!   metric, and the tests' proof that nothing outlives a room).
//! - `error`: [`LkError`], and [`RpcErrorCode`].
//! - `proto`: the protobuf messages used, hand-written with prost derives and checked field by
//!   field against the library's own schema by `tests/schema.rs`.
//!
//! ## Threads and runtimes
//! Nothing here blocks a runtime thread: requests to the library return at once (frames are copied
//! inside the call), and everything slow is an async answer awaited on a oneshot channel. Any
//! tokio runtime with the time driver works, including actix's current-thread arbiters; the
//! futures and [`AvatarRoom`] are `Send`. One library thread of this crate
//! (`livekit-ffi-events`) and the library's own threads (a tokio runtime, libwebrtc's
//! network/worker/signaling threads while a room exists) run beside the caller's. Library logs go
//! to `tracing` under the target `livekit_ffi` (its DEBUG/TRACE records are many: filter them).
//! Read the event receiver (or drop it): undelivered [`RoomEvent::UserAudio`] would accumulate.
//!
//! ## What the library does that a caller must know (1.2.1, found here)
//! - **Sources and tracks are made after `connect`.** The library creates each with the WebRTC
//!   factory that exists while a room is alive; made before any room, each got a factory of its
//!   own that was torn down at once, and the process later segfaulted in
//!   `~PeerConnectionFactory` (reproduced: a room deleted by the server, then the next join).
//!   Handles are released tracks and sources first, room last.
//! - **`ready_for_room_event` after the connect callback** (`FfiRequest` 83, its response is 82):
//!   until then the library holds the room's events; without it, it closes the room after 15 s
//!   and reports a panic. The dispatcher sends it before it answers `join`.
//! - One audio capture at a time per source (a second is refused until the first's callback); the
//!   queue accepts a capture while it holds at most `audio_queue_ms`, so captures run up to one
//!   queue ahead of real time; a capture longer than the queue is fed in queue-sized pieces here
//!   so an interrupt stops the rest. `queue_size_ms` not a multiple of 10 is an assertion (a
//!   panic) in the library; I420 planes of the wrong length are a panic too: both are checked
//!   here first.
//! - `unpublish_track` on a room whose events have stopped never answers (the library waits for
//!   its own `LocalTrackUnpublished`), so `close` skips it for a room already disconnected, and
//!   every wait has a timeout.
//! - An audio stream ends when its track's handle is dropped; received frames (and data packets,
//!   stream readers, remote participants and publications) each carry a handle that must be
//!   dropped, including those of rooms or streams nobody listens to any more.
//! - `async_id`s are chosen by the caller (`request_async_id`), so the waiter exists before the
//!   answer can arrive; answers with nobody waiting are released (an orphaned connect is
//!   disconnected).
//! - With the server gone, the library retries (resume, then ten full reconnects with backoff) and
//!   reports `Disconnected { reason: "unknown_reason" }` after about 17-25 s. On the
//!   `/rtc/v1` path a 404 makes it fall back to `/rtc` (two peer connections).
//!
//! ## Set-up and tests
//! `scripts/setup_livekit.sh` (part of `make setup`) fetches the wheel (sha256 pinned), unpacks the
//! library and extracts its schema to `.setup/livekit/ffi.fds`. Paths: the tests use
//! `$AVS_REPO_ROOT` (else two levels above this crate, its place in the workspace), or
//! `$AVS_LIVEKIT_LIB` / `$AVS_LIVEKIT_FDS` directly.
//! - `tests/schema.rs`: every field of `src/proto.rs` against the library's schema.
//! - `tests/library.rs`: the real library without a network (load, refuse, failed connect, no leak).
//! - `tests/netns.rs` (`AVS_NETNS=1`, inside a network namespace; libwebrtc ignores loopback):
//!   LiveKit's own server (`.setup/livekit-server/`) with `tests/support/lk_peer.py` (LiveKit's
//!   Python SDK) as the other participants, which decode and measure what is published, speak,
//!   stream bytes and call RPC; one test (a dropped signal connection) uses the fake server
//!   `tests/support/fake_livekit.py`. See that file for how to run it.

mod data;
mod dispatcher;
mod error;
mod events;
mod ffi;
mod load;
mod proto;
mod room;
mod shared;

pub use error::{LkError, RpcErrorCode};
pub use events::{RoomEvent, RpcInvocation};
pub use ffi::{live_handles, FfiLibrary};
pub use room::{join, AvatarOptions, AvatarRoom, RoomStats};
