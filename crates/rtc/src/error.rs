use std::net::IpAddr;

use crate::ViewerId;

/// Everything the media engine reports to its caller. Each message is a sentence a log reader (or, for the
/// offer errors, a browser developer) can act on.
#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    #[error("could not bind a UDP media socket on {ip} in ports {port_min}-{port_max}: {source}")]
    Bind {
        ip: IpAddr,
        port_min: u16,
        port_max: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid RTC configuration: {0}")]
    Config(String),
    #[error("could not start the media I/O thread: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid session parameters: {0}")]
    InvalidSession(String),
    #[error("invalid frame: {0}")]
    InvalidFrame(String),
    /// The offer is not SDP at all, or str0m could not parse it.
    #[error("the offer is not valid SDP: {0}")]
    InvalidSdp(String),
    /// The offer is SDP but asks for something this server does not do (no receivable video, no VP8, ...).
    #[error("the offer cannot be answered: {0}")]
    UnsupportedOffer(String),
    #[error("the trickle fragment is not usable: {0}")]
    InvalidCandidate(String),
    #[error("viewer {0} is not connected to this session")]
    UnknownViewer(ViewerId),
    #[error("the session already has its maximum of {0} viewers")]
    TooManyViewers(usize),
    #[error("the session is closed")]
    SessionClosed,
    #[error("the media engine has stopped")]
    Stopped,
    #[error("codec error: {0}")]
    Codec(String),
}
