//! Ownership of the library's handles. Every id the library hands over (room, participant, track,
//! source, stream, publication, frame buffer, response buffer) lives in exactly one [`OwnedHandle`],
//! whose `Drop` gives it back with `livekit_ffi_drop_handle`, once. A process-wide count of them
//! lets a test (and a metric) prove that nothing outlives its room.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::ffi;

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// How many library handles this process holds right now.
pub fn live_handles() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// One handle id owned by this crate. Deliberately not `Clone`.
#[derive(Debug)]
pub(crate) struct OwnedHandle {
    id: u64,
}

impl OwnedHandle {
    /// Takes ownership of `id`. The library never hands out 0 (its `INVALID_HANDLE`), so 0 means
    /// the message carried no handle and nothing is owned.
    pub(crate) fn new(id: u64) -> Option<Self> {
        if id == 0 {
            return None;
        }
        LIVE.fetch_add(1, Ordering::Relaxed);
        Some(Self { id })
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for OwnedHandle {
    fn drop(&mut self) {
        // An OwnedHandle only exists once the library is loaded (ids come from it), so `library()`
        // is always there; the check keeps this path free of panics regardless.
        if let Some(lib) = ffi::loaded() {
            if !lib.drop_handle(self.id) {
                // The library already released it itself (it does so for the tracks of a room it
                // closes, storing a placeholder; or after its 15 s ready-for-events timeout).
                tracing::debug!(
                    handle = self.id,
                    "the library did not know this handle any more"
                );
            }
        }
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}
