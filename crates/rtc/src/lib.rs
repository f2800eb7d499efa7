//! `avs_rtc`: the WebRTC media engine of the local room. Without LiveKit, the server itself is the WebRTC
//! peer of every browser watching a session; this crate is that peer, minus the HTTP signalling (WHEP-style:
//! the browser POSTs an offer, gets the answer) which the server's HTTP layer does by calling [`MediaSession::accept`].
//!
//! # Design
//!
//! ```text
//!  owner (actix arbiter)          encoder thread (one per session)        I/O thread (one per server)
//!  push_video_i420 ──try_send──▶  VP8 encode once ──┐                     mio poll: UDP socket + waker
//!  push_audio      ──try_send──▶  16→48 kHz, Opus ──┴─ bounded, drop ──▶  Router (sans-IO core):
//!  accept/patch/leave ───────── commands (unbounded, rare) ────────────▶   one str0m Rtc per viewer,
//!  Microphone::recv ◀── drop-oldest queue ◀── mix ◀── Opus decode, 48→16 kHz ─┘  same packets to each
//! ```
//!
//! - **Encode once, fan out.** A session's frames are encoded by its own thread, once, and the one encoded
//!   frame (an `Arc<[u8]>`) is written to every viewer's str0m `Rtc`; per viewer that is packetisation,
//!   SRTP and a `send_to`. The encoder runs only while a viewer's video is up. A new viewer, a PLI or a FIR
//!   asks for a keyframe; requests within 250 ms are served by one keyframe. A viewer gets no delta frames
//!   until its first keyframe.
//! - **Nothing blocks the caller.** Every push is a `try_send` into a bounded queue: a frame arriving while
//!   the encoder is busy is dropped (counted), audio beyond a second of backlog too. `accept`/`patch` send a
//!   command to the I/O thread and await a oneshot reply; no runtime flavour is required of the caller.
//! - **One loop drives every peer**, as in str0m's chat example: read datagrams until the socket is empty,
//!   route each to the `Rtc` that accepts it, write media, advance timers, and after every mutation drain
//!   `poll_output` to `Timeout`. The loop (`server`) owns the socket and the clock; the `router` owns the
//!   protocol state and is driven by explicit inputs, so it can be tested without either.
//! - **A slow or dead viewer costs only itself.** UDP never pushes back; a viewer that loses packets repairs
//!   through NACK/RTX (str0m keeps a send buffer) or a PLI (one shared keyframe). A viewer that goes silent is
//!   dropped after `idle_timeout`; one whose ICE/DTLS never completes after `connect_timeout`. If the I/O
//!   thread itself falls behind, encoded media is dropped at its bounded inbox, never queued without limit,
//!   and the frame after a dropped one is a keyframe (a VP8 delta must not meet a reference it lacks).
//! - **One clock for lip sync.** Video and audio RTP times both count from the session's epoch, computed
//!   from the `captured` instants the owner passes; audio packets are then timed by sample count within a
//!   talkspurt (so jitter in the caller's instants does not reach the RTP clock), and shifted by the Opus
//!   encoder's lookahead (6.5 ms) so decoded sound lines up with its capture instant. str0m's sender reports
//!   map both to the same wallclock, which is what the browser synchronises on (measured offset: 0.0 ms).
//! - **ICE-lite, one host candidate, one socket** for all sessions: the browser does the checks and
//!   nominates; its address is learnt from them, so trickled candidates are optional.
//!
//! # The offer a browser must send
//!
//! One video transceiver the browser receives on (`recvonly`) offering VP8, and one audio transceiver it
//! receives on offering Opus: `recvonly` for a viewer without a microphone, or `sendrecv` with the
//! microphone track attached. A separate `sendonly` audio transceiver for the microphone works too. See
//! [`MediaSession::accept`].
//!
//! # Modules
//! - `session`: [`MediaSession`] (and [`RtcServer::open_session`], which makes one), the encoder thread,
//!   audio timing.
//! - `server`: [`RtcServer`], [`RtcConfig`], the I/O loop.
//! - `router`: the sans-IO core (viewers, fan-out, timeouts, microphones).
//! - `shared`: what a session, its encoder thread and the I/O thread share (its key, its encoded media,
//!   viewer counts and keyframe requests).
//! - `offer`: reading a browser's offer; `mic`: mixing and the microphone queue; `ids`: [`ViewerId`].
//! - [`vp8`], [`audio`]: the codecs and the resampler glue.

mod error;
mod ids;
mod mic;
mod offer;
mod router;
mod server;
mod session;
mod shared;
mod stats;

pub mod audio;
#[cfg(feature = "test-client")]
pub mod test_client;
pub mod vp8;

pub use error::RtcError;
pub use ids::ViewerId;
pub use mic::Microphone;
pub use server::{RtcConfig, RtcServer};
pub use session::MediaSession;
pub use stats::{RtcStats, ENCODE_BUCKETS_SECONDS};

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}

    #[test]
    fn handles_cross_threads_and_futures_are_send() {
        send_sync::<RtcServer>();
        send_sync::<MediaSession>();
        send_sync::<Microphone>();
        // Futures of a session can be spawned on a multi-thread runtime as well as awaited on an arbiter.
        fn futures(s: &MediaSession, m: &mut Microphone) {
            send(&s.accept(""));
            send(&s.patch(ViewerId(1), ""));
            send(&m.recv());
        }
        let _ = futures;
    }
}
