/// Everything that can go wrong between this crate and `liblivekit_ffi.so`.
#[derive(Debug, thiserror::Error)]
pub enum LkError {
    #[error("could not load the LiveKit FFI library {path}: {reason}")]
    Load { path: String, reason: String },
    /// The library's callback is process-global: one process can use one library file.
    #[error(
        "the LiveKit FFI library is already loaded from {loaded}; cannot also load {requested}"
    )]
    AlreadyLoaded { loaded: String, requested: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// `livekit_ffi_request` returned no response: the library could not decode or handle the
    /// request (its own log, forwarded to `tracing`, says why).
    #[error("the LiveKit FFI library refused the {0} request")]
    Refused(&'static str),
    #[error("the LiveKit FFI library answered the {0} request with something else")]
    UnexpectedResponse(&'static str),
    #[error("could not connect to the LiveKit room: {0}")]
    Connect(String),
    #[error("could not publish the {kind} track: {reason}")]
    Publish { kind: &'static str, reason: String },
    #[error("audio capture failed: {0}")]
    Capture(String),
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: &'static str, secs: u64 },
    /// A remote participant's RPC method answered with an error, or the call failed on the way
    /// (LiveKit's codes: 1400 unsupported method, 1401 recipient not found, 1500 application
    /// error, 1501/1502 connection/response timeout, 1503 recipient disconnected, ...).
    #[error("RPC failed with code {code}: {message}")]
    Rpc { code: u32, message: String },
    #[error("the room is disconnected")]
    Disconnected,
    /// The thread that receives the library's events has stopped; nothing can be awaited any more.
    #[error("the LiveKit FFI event dispatcher is gone")]
    DispatcherGone,
}

/// The error codes LiveKit's RPC defines that an avatar answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcErrorCode {
    /// The method ran and failed (`APPLICATION_ERROR`).
    Application = 1500,
    /// No such method here (`UNSUPPORTED_METHOD`).
    UnsupportedMethod = 1400,
}
