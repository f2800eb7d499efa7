//! What a room's owner (`room`) and the dispatcher thread both hold: the room's shared state and
//! its handle.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Mutex, PoisonError};

use crate::ffi::{self, Input, OwnedHandle};
use crate::proto::{self, ffi_request};

#[derive(Default)]
pub(crate) struct StatsCounters {
    pub video_frames: AtomicU64,
    pub audio_samples: AtomicU64,
    pub user_audio_samples: AtomicU64,
    pub reconnects: AtomicU64,
}

pub(crate) struct LocalPublication {
    pub kind: &'static str,
    pub sid: String,
    pub handle: OwnedHandle,
}

/// What the room's owner and the dispatcher thread both see.
pub(crate) struct RoomShared {
    pub stats: StatsCounters,
    /// Set once the library reports the room disconnected (or ends its events): from then on
    /// unpublish would wait forever for an event that never comes, so close skips it.
    pub disconnected: AtomicBool,
    pub user_audio_sample_rate: u32,
    pub receive_microphones: bool,
    pub byte_stream_topics: Vec<String>,
    /// Bumped by every interrupt: a capture that started before stops feeding the rest of its
    /// samples.
    pub clear_generation: AtomicU64,
    pub publications: Mutex<Vec<LocalPublication>>,
}

impl RoomShared {
    /// After a full reconnect the library republishes the tracks under new sids, keeping the
    /// publication handle (or, rarely, handing a new one).
    pub(crate) fn republished(&self, event: proto::LocalTrackRepublished) {
        let mut publications = self
            .publications
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(publication) = publications
            .iter_mut()
            .find(|p| p.sid == event.previous_sid)
        else {
            drop(OwnedHandle::new(event.publication_handle));
            return;
        };
        tracing::debug!(
            kind = publication.kind,
            previous = %event.previous_sid,
            sid = %event.info.sid,
            "track republished"
        );
        publication.sid = event.info.sid;
        if publication.handle.id() != event.publication_handle {
            if let Some(handle) = OwnedHandle::new(event.publication_handle) {
                publication.handle = handle;
            }
        }
    }
}

/// The room's handle. Dropped without [`AvatarRoom::close`](crate::AvatarRoom::close) (an error half-way through `join`, a
/// cancelled future, a panicking owner), it still leaves the room: it tells the library to disconnect
/// and the dispatcher to release the room's remote handles, without waiting.
pub(crate) struct RoomHandle {
    handle: OwnedHandle,
    pub(crate) closed: bool,
}

impl RoomHandle {
    pub(crate) fn new(id: u64) -> Option<Self> {
        OwnedHandle::new(id).map(|handle| Self {
            handle,
            closed: false,
        })
    }

    pub(crate) fn id(&self) -> u64 {
        self.handle.id()
    }
}

impl Drop for RoomHandle {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let room_handle = self.handle.id();
        if let Some(lib) = ffi::loaded() {
            // The library parks a new room until it is told the client is ready; a disconnect of a
            // parked room waits 15 s and ends in a reported panic. Ready is harmless when repeated.
            let ready = proto::ReadyForRoomEventRequest { room_handle };
            let _ = lib.request(ffi_request::Message::ReadyForRoomEvent(ready));
            let disconnect = proto::DisconnectRequest {
                room_handle,
                request_async_id: Some(ffi::next_async_id()),
                reason: None,
            };
            if let Err(e) = lib.request(ffi_request::Message::Disconnect(disconnect)) {
                tracing::warn!(error = %e, "could not disconnect a dropped room");
            }
        }
        let _ = ffi::send_input(Input::RemoveRoom {
            room: room_handle,
            done: None,
        });
    }
}
