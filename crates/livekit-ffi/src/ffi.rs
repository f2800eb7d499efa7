//! The C ABI of `liblivekit_ffi.so`, loaded at run time, and the one process-wide event callback.
//!
//! The library takes one callback for the whole process (`livekit_ffi_initialize`). It calls it from
//! its own threads, sometimes while holding its internal locks, with a buffer that is valid only
//! during the call. So the callback does nothing but copy the bytes into a channel; the
//! dispatcher thread (`crate::dispatcher`) decodes and routes them, and is the only place (besides
//! request callers) that calls back into the library.
//!
//! Here too: the dispatcher's input ([`Input`], fed by the callback and by rooms), and the
//! ownership of the library's handles ([`OwnedHandle`], [`live_handles`]), whose release is one
//! request of this ABI. Loading the library (which starts the dispatcher thread) is `load`'s.

use std::ffi::c_char;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use prost::Message as _;
use tokio::sync::oneshot;

use crate::proto::{ffi_request, ffi_response, FfiRequest, FfiResponse};
use crate::LkError;

type EventCallback = extern "C" fn(*const u8, usize);
pub(crate) type InitializeFn =
    unsafe extern "C" fn(EventCallback, bool, *const c_char, *const c_char);
pub(crate) type RequestFn =
    unsafe extern "C" fn(*const u8, usize, *mut *const u8, *mut usize) -> u64;
pub(crate) type DropHandleFn = unsafe extern "C" fn(u64) -> bool;

/// The loaded library. One per process: [`FfiLibrary::load`] returns the same one every time.
pub struct FfiLibrary {
    pub(crate) path: PathBuf,
    pub(crate) request: RequestFn,
    pub(crate) drop_handle: DropHandleFn,
    /// Keeps the code mapped. Never dropped: the `Arc` in `LIBRARY` lives until the process exits,
    /// and the library's threads call into this process until then.
    pub(crate) _library: libloading::Library,
}

impl std::fmt::Debug for FfiLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FfiLibrary")
            .field("path", &self.path)
            .finish()
    }
}

pub(crate) static LIBRARY: OnceLock<Arc<FfiLibrary>> = OnceLock::new();
pub(crate) static LOAD_LOCK: Mutex<()> = Mutex::new(());
/// Where the callback puts events, and where requests to the dispatcher go.
pub(crate) static INPUT: OnceLock<mpsc::Sender<Input>> = OnceLock::new();
/// Async ids this crate picks itself (`request_async_id`), so a waiter is registered before its
/// request is made and no callback can overtake it. They start far above the library's own id
/// counter (which starts at 1) so the two never meet.
static NEXT_ASYNC_ID: AtomicU64 = AtomicU64::new(1 << 48);

/// What the dispatcher thread is fed, in one FIFO.
pub(crate) enum Input {
    /// One serialized `FfiEvent`, copied out of the callback.
    Event(Vec<u8>),
    /// The owner is done with a room: release its remote handles, then say so on `done`.
    RemoveRoom {
        room: u64,
        done: Option<oneshot::Sender<()>>,
    },
}

pub(crate) fn loaded() -> Option<&'static Arc<FfiLibrary>> {
    LIBRARY.get()
}

pub(crate) fn next_async_id() -> u64 {
    NEXT_ASYNC_ID.fetch_add(1, Ordering::Relaxed)
}

pub(crate) fn send_input(input: Input) -> Result<(), LkError> {
    INPUT
        .get()
        .ok_or(LkError::DispatcherGone)?
        .send(input)
        .map_err(|_| LkError::DispatcherGone)
}

/// Copies the event out of the library's buffer, nothing more: it runs on the library's threads.
pub(crate) extern "C" fn on_event(data: *const u8, len: usize) {
    let bytes = if data.is_null() || len == 0 {
        Vec::new()
    } else {
        // SAFETY: the library passes a buffer of `len` bytes valid for the duration of this call.
        unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
    };
    if let Some(input) = INPUT.get() {
        // An unbounded channel: sending never blocks. It fails only if the dispatcher is gone.
        let _ = input.send(Input::Event(bytes));
    }
}

impl FfiLibrary {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn drop_handle(&self, id: u64) -> bool {
        // SAFETY: any u64 is acceptable; unknown ids are answered with false.
        unsafe { (self.drop_handle)(id) }
    }

    /// One synchronous request. The library answers at once; work that takes time answers with an
    /// async id and finishes later as an event.
    pub(crate) fn request(
        &self,
        message: ffi_request::Message,
    ) -> Result<ffi_response::Message, LkError> {
        let name = request_name(&message);
        let bytes = FfiRequest {
            message: Some(message),
        }
        .encode_to_vec();
        let mut res_ptr: *const u8 = std::ptr::null();
        let mut res_len: usize = 0;
        // SAFETY: `bytes` outlives the call; the out-pointers are valid locals. Pointers inside the
        // request (frame data) are the caller's, valid for the call, and copied by the library.
        let id = unsafe { (self.request)(bytes.as_ptr(), bytes.len(), &mut res_ptr, &mut res_len) };
        // The response buffer belongs to this handle: read it, then let it go.
        let response_handle = OwnedHandle::new(id).ok_or(LkError::Refused(name))?;
        let response = if res_ptr.is_null() || res_len == 0 {
            FfiResponse::default()
        } else {
            // SAFETY: the library keeps `res_len` bytes at `res_ptr` until the handle is dropped.
            let data = unsafe { std::slice::from_raw_parts(res_ptr, res_len) };
            FfiResponse::decode(data).map_err(|_| LkError::UnexpectedResponse(name))?
        };
        drop(response_handle);
        response.message.ok_or(LkError::UnexpectedResponse(name))
    }
}

fn request_name(message: &ffi_request::Message) -> &'static str {
    use ffi_request::Message as M;
    match message {
        M::Connect(_) => "connect",
        M::Disconnect(_) => "disconnect",
        M::PublishTrack(_) => "publish_track",
        M::UnpublishTrack(_) => "unpublish_track",
        M::SetSubscribed(_) => "set_subscribed",
        M::CreateVideoTrack(_) => "create_video_track",
        M::CreateAudioTrack(_) => "create_audio_track",
        M::NewVideoSource(_) => "new_video_source",
        M::CaptureVideoFrame(_) => "capture_video_frame",
        M::NewAudioStream(_) => "new_audio_stream",
        M::NewAudioSource(_) => "new_audio_source",
        M::CaptureAudioFrame(_) => "capture_audio_frame",
        M::ClearAudioBuffer(_) => "clear_audio_buffer",
        M::ReadyForRoomEvent(_) => "ready_for_room_event",
        M::PerformRpc(_) => "perform_rpc",
        M::RegisterRpcMethod(_) => "register_rpc_method",
        M::RpcMethodInvocationResponse(_) => "rpc_method_invocation_response",
        M::ByteReadIncremental(_) => "byte_read_incremental",
    }
}

// Ownership of the library's handles. Every id the library hands over (room, participant, track,
// source, stream, publication, frame buffer, response buffer) lives in exactly one `OwnedHandle`,
// whose `Drop` gives it back with `livekit_ffi_drop_handle`, once. A process-wide count of them
// lets a test (and a metric) prove that nothing outlives its room.

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
        if let Some(lib) = loaded() {
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
