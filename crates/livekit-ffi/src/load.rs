//! Loading the library: once per process, with the dispatcher thread its events go to. (Above both
//! `ffi` and `dispatcher`, which name each other nowhere.)

use std::ffi::CStr;
use std::path::Path;
use std::sync::{mpsc, Arc, PoisonError};

use crate::dispatcher;
use crate::ffi::{
    on_event, DropHandleFn, FfiLibrary, InitializeFn, RequestFn, INPUT, LIBRARY, LOAD_LOCK,
};
use crate::LkError;

/// Reported to the LiveKit server as the client SDK (it is LiveKit's Rust SDK underneath).
const SDK: &CStr = c"rust";
const SDK_VERSION: &CStr = c"0.1.0";

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
}
