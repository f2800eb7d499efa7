//! What a session's owner, its encoder thread and the I/O thread share: the session's key, its encoded
//! media, and its shared state (viewer counts, keyframe requests, the microphone queue).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::mic::MicQueue;
use crate::ViewerId;

/// Frames waiting for the encoder beyond the one it is encoding; more are dropped (counted), so a slow
/// encoder costs frame rate, never latency.
pub(crate) const MAX_PENDING_FRAMES: usize = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SessionKey(pub u64);

/// One encoded video frame, shared by every viewer of the session.
#[derive(Debug)]
pub(crate) struct EncodedVideo {
    pub data: Arc<[u8]>,
    pub keyframe: bool,
    /// 90 kHz ticks since the session's epoch.
    pub rtp_time: u64,
    pub captured: Instant,
}

/// One 20 ms Opus packet, shared by every viewer of the session.
#[derive(Debug)]
pub(crate) struct EncodedAudio {
    pub data: Arc<[u8]>,
    /// 48 kHz ticks since the session's epoch.
    pub rtp_time: u64,
    /// The wallclock of this packet's RTP time: when its first sample was captured (same clock as video's
    /// `captured`), less the Opus lookahead.
    pub captured: Instant,
    pub talkspurt_start: bool,
}

/// State the session's owner, its encoder thread and the I/O thread share.
pub(crate) struct SessionShared {
    pub name: String,
    /// RTP times of both kinds count from here, so audio and video share one clock.
    pub epoch: Instant,
    viewer_ids: Mutex<HashSet<ViewerId>>,
    pub video_viewers: AtomicUsize,
    pub audio_viewers: AtomicUsize,
    pub keyframe_wanted: AtomicBool,
    pub pending_frames: AtomicUsize,
    pub mic: Arc<MicQueue>,
    /// Spare frame buffers, so 25 frames a second do not each allocate a fresh picture.
    frame_pool: Mutex<Vec<Vec<u8>>>,
}

impl SessionShared {
    pub fn new(name: &str, epoch: Instant, mic: Arc<MicQueue>) -> Self {
        SessionShared {
            name: name.to_string(),
            epoch,
            viewer_ids: Mutex::new(HashSet::new()),
            video_viewers: AtomicUsize::new(0),
            audio_viewers: AtomicUsize::new(0),
            keyframe_wanted: AtomicBool::new(false),
            pending_frames: AtomicUsize::new(0),
            mic,
            frame_pool: Mutex::new(Vec::new()),
        }
    }

    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize, usize, bool) {
        (
            self.ids().len(),
            self.video_viewers.load(Relaxed),
            self.audio_viewers.load(Relaxed),
            self.keyframe_wanted.swap(false, Relaxed),
        )
    }

    #[cfg(test)]
    pub fn counts_peek(&self) -> (usize, usize, usize) {
        (
            self.ids().len(),
            self.video_viewers.load(Relaxed),
            self.audio_viewers.load(Relaxed),
        )
    }

    pub fn ids(&self) -> std::sync::MutexGuard<'_, HashSet<ViewerId>> {
        // A set of ids cannot be left half-updated by a panic.
        self.viewer_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn add_viewer(&self, id: ViewerId) {
        self.ids().insert(id);
    }

    pub fn remove_viewer(&self, id: ViewerId, video_counted: bool, audio_counted: bool) {
        self.ids().remove(&id);
        if video_counted {
            self.video_viewers.fetch_sub(1, Relaxed);
        }
        if audio_counted {
            self.audio_viewers.fetch_sub(1, Relaxed);
        }
    }

    pub fn add_video_viewer(&self) {
        self.video_viewers.fetch_add(1, Relaxed);
    }

    pub fn add_audio_viewer(&self) {
        self.audio_viewers.fetch_add(1, Relaxed);
    }

    pub fn request_keyframe(&self) {
        self.keyframe_wanted.store(true, Relaxed);
    }

    pub fn pooled_frame(&self, len: usize) -> Vec<u8> {
        let mut buf = self
            .frame_pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default();
        buf.clear();
        buf.reserve(len);
        buf
    }

    pub fn recycle_frame(&self, buf: Vec<u8>) {
        let mut pool = self
            .frame_pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if pool.len() < MAX_PENDING_FRAMES + 2 {
            pool.push(buf);
        }
    }
}
