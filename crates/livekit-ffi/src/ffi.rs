//! The C ABI of `liblivekit_ffi.so`, loaded at run time, and the one process-wide event callback.
//!
//! The library takes one callback for the whole process (`livekit_ffi_initialize`). It calls it from
//! its own threads, sometimes while holding its internal locks, with a buffer that is valid only
//! during the call. So the callback does nothing but copy the bytes into a channel; the
//! dispatcher thread (`crate::dispatcher`) decodes and routes them, and is the only place (besides
//! request callers) that calls back into the library.

use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use prost::Message as _;

use crate::dispatcher::{self, Input};
use crate::handle::OwnedHandle;
use crate::proto::{ffi_request, ffi_response, FfiRequest, FfiResponse};
use crate::LkError;

type EventCallback = extern "C" fn(*const u8, usize);
type InitializeFn = unsafe extern "C" fn(EventCallback, bool, *const c_char, *const c_char);
type RequestFn = unsafe extern "C" fn(*const u8, usize, *mut *const u8, *mut usize) -> u64;
type DropHandleFn = unsafe extern "C" fn(u64) -> bool;

/// Reported to the LiveKit server as the client SDK (it is LiveKit's Rust SDK underneath).
const SDK: &CStr = c"rust";
const SDK_VERSION: &CStr = c"0.1.0";

/// The loaded library. One per process: [`FfiLibrary::load`] returns the same one every time.
pub struct FfiLibrary {
    path: PathBuf,
    request: RequestFn,
    drop_handle: DropHandleFn,
    /// Keeps the code mapped. Never dropped: the `Arc` in `LIBRARY` lives until the process exits,
    /// and the library's threads call into this process until then.
    _library: libloading::Library,
}

impl std::fmt::Debug for FfiLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FfiLibrary")
            .field("path", &self.path)
            .finish()
    }
}

static LIBRARY: OnceLock<Arc<FfiLibrary>> = OnceLock::new();
static LOAD_LOCK: Mutex<()> = Mutex::new(());
/// Where the callback puts events, and where requests to the dispatcher go.
static INPUT: OnceLock<mpsc::Sender<Input>> = OnceLock::new();
/// Async ids this crate picks itself (`request_async_id`), so a waiter is registered before its
/// request is made and no callback can overtake it. They start far above the library's own id
/// counter (which starts at 1) so the two never meet.
static NEXT_ASYNC_ID: AtomicU64 = AtomicU64::new(1 << 48);

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
extern "C" fn on_event(data: *const u8, len: usize) {
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
    /// Loads `liblivekit_ffi.so` from `path` and initializes it (once per process). Loading the
    /// same file again returns the same library; another file is refused, since the library's
    /// callback and handle table are process-global.
    pub fn load(path: impl AsRef<Path>) -> Result<Arc<FfiLibrary>, LkError> {
        let requested = path.as_ref();
        let load_error = |reason: String| LkError::Load {
            path: requested.display().to_string(),
            reason,
        };
        let canonical = std::fs::canonicalize(requested).map_err(|e| load_error(e.to_string()))?;
        let _guard = LOAD_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lib) = LIBRARY.get() {
            if lib.path == canonical {
                return Ok(lib.clone());
            }
            return Err(LkError::AlreadyLoaded {
                loaded: lib.path.display().to_string(),
                requested: canonical.display().to_string(),
            });
        }

        // SAFETY: loading runs the library's initialisers; it is LiveKit's own FFI build, which
        // has none with preconditions on this process.
        let library = unsafe { libloading::Library::new(&canonical) }
            .map_err(|e| load_error(e.to_string()))?;
        // SAFETY: the signatures are those of livekit_ffi.h (and `livekit_ffi_initialize` of
        // livekit-ffi's cabi.rs, which the header omits).
        let (initialize, request, drop_handle) = unsafe {
            let initialize = *library
                .get::<InitializeFn>(b"livekit_ffi_initialize\0")
                .map_err(|e| load_error(e.to_string()))?;
            let request = *library
                .get::<RequestFn>(b"livekit_ffi_request\0")
                .map_err(|e| load_error(e.to_string()))?;
            let drop_handle = *library
                .get::<DropHandleFn>(b"livekit_ffi_drop_handle\0")
                .map_err(|e| load_error(e.to_string()))?;
            (initialize, request, drop_handle)
        };
        let lib = Arc::new(FfiLibrary {
            path: canonical,
            request,
            drop_handle,
            _library: library,
        });

        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("livekit-ffi-events".into())
            .spawn(move || dispatcher::run(rx))
            .map_err(|e| load_error(format!("could not start the event thread: {e}")))?;
        // The first load is the only one to get here (LOAD_LOCK, and LIBRARY is set below).
        let _ = INPUT.set(tx);
        let _ = LIBRARY.set(lib.clone());

        // Logs are captured (delivered as events and forwarded to `tracing`) rather than left to
        // the library's env_logger on stderr.
        // SAFETY: `on_event` has the callback's C signature and stays valid for the process; the
        // strings are NUL-terminated statics.
        unsafe { initialize(on_event, true, SDK.as_ptr(), SDK_VERSION.as_ptr()) };
        tracing::debug!(path = %lib.path.display(), "LiveKit FFI library loaded");
        Ok(lib)
    }

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
