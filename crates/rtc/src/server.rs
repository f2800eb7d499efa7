//! The server: one UDP socket, one I/O thread running the [`Router`] (str0m's chat-example loop on mio), and
//! the channels through which sessions reach it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::oneshot;

use crate::offer::OfferPlan;
use crate::router::{PacketKind, Router, RouterConfig};
use crate::shared::{EncodedAudio, EncodedVideo, SessionKey, SessionShared};
use crate::stats::{add, inc, Counters, RtcStats};
use crate::{RtcError, ViewerId};

/// Encoded media waiting for the I/O thread, all sessions together (about 1 s of audio and video for ten
/// sessions); beyond it encoders drop rather than wait.
const MEDIA_QUEUE: usize = 1024;
const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);
/// Longest poll without a deadline: keeps housekeeping going even if a deadline computation is off.
const MAX_POLL: Duration = Duration::from_millis(500);

/// Where and how the media engine runs.
#[derive(Debug, Clone)]
pub struct RtcConfig {
    /// Where the media socket binds.
    pub bind_ip: IpAddr,
    /// The address put in the ICE host candidate (what a NAT or firewall forwards to `bind_ip`). `None`:
    /// `bind_ip`, or loopback if `bind_ip` is unspecified.
    pub public_ip: Option<IpAddr>,
    /// UDP port range to bind in (first free one); `0, 0` for any free port.
    pub port_min: u16,
    pub port_max: u16,
    /// VP8 target (CBR). 800 kbit/s suits 512×512 at 25 fps.
    pub video_bitrate_bps: u32,
    /// A viewer whose ICE and DTLS are not up after this long is dropped.
    pub connect_timeout: Duration,
    /// A viewer from which nothing arrived for this long is dropped. Browsers send RTCP every second and
    /// consent checks every few seconds, so a live one is never silent for long.
    pub idle_timeout: Duration,
    pub max_viewers_per_session: usize,
}

impl Default for RtcConfig {
    fn default() -> Self {
        RtcConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            public_ip: None,
            port_min: 0,
            port_max: 0,
            video_bitrate_bps: 800_000,
            connect_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(10),
            max_viewers_per_session: 32,
        }
    }
}

pub(crate) enum Command {
    OpenSession {
        key: SessionKey,
        shared: Arc<SessionShared>,
    },
    CloseSession {
        key: SessionKey,
    },
    Accept {
        key: SessionKey,
        offer: String,
        plan: OfferPlan,
        reply: oneshot::Sender<Result<(ViewerId, String), RtcError>>,
    },
    Patch {
        viewer: ViewerId,
        fragment: String,
        reply: oneshot::Sender<Result<(), RtcError>>,
    },
    Leave {
        viewer: ViewerId,
    },
    Shutdown,
}

pub(crate) enum MediaOut {
    Video {
        key: SessionKey,
        frame: EncodedVideo,
    },
    Audio {
        key: SessionKey,
        packet: EncodedAudio,
    },
}

/// How sessions and encoder threads reach the I/O thread: control commands (unbounded: rare, never
/// dropped), media (bounded: dropped when the I/O thread is behind), and the waker that interrupts its poll.
pub(crate) struct IoHandle {
    commands: Sender<Command>,
    media: SyncSender<MediaOut>,
    waker: Waker,
    pub stats: Arc<Counters>,
}

impl IoHandle {
    pub fn command(&self, c: Command) -> Result<(), RtcError> {
        self.commands.send(c).map_err(|_| RtcError::Stopped)?;
        self.wake();
        Ok(())
    }

    /// `false` if the media was dropped (the I/O thread is behind or gone).
    pub fn media(&self, m: MediaOut) -> bool {
        let sent = self.media.try_send(m).is_ok();
        if sent {
            self.wake();
        }
        sent
    }

    fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "could not wake the media I/O thread");
        }
    }
}

struct ServerInner {
    io: Arc<IoHandle>,
    local_addr: SocketAddr,
    candidate: SocketAddr,
    config: RtcConfig,
    next_session: AtomicU64,
}

impl Drop for ServerInner {
    fn drop(&mut self) {
        // Sessions hold the IoHandle too, but each holds the server as well, so by now all are gone.
        let _ = self.io.command(Command::Shutdown);
    }
}

/// The media engine of one process: binds the UDP socket, runs the I/O thread, opens sessions. Cheap to
/// clone; the I/O thread stops when the last clone and the last session are dropped.
#[derive(Clone)]
pub struct RtcServer {
    inner: Arc<ServerInner>,
}

/// The session's link to the server; keeps the server (and its I/O thread) alive while the session lives.
pub(crate) struct ServerRef(#[allow(dead_code)] Arc<ServerInner>);

impl RtcServer {
    /// Binds the media socket and starts the I/O thread. Call from anywhere: nothing here needs a runtime.
    pub fn start(config: RtcConfig) -> Result<RtcServer, RtcError> {
        if config.port_min > config.port_max {
            return Err(RtcError::Config(format!(
                "port_min {} is above port_max {}",
                config.port_min, config.port_max
            )));
        }
        if config.max_viewers_per_session == 0 {
            return Err(RtcError::Config(
                "max_viewers_per_session must be at least 1".into(),
            ));
        }
        let std_socket = bind_in_range(config.bind_ip, config.port_min, config.port_max)?;
        let local_addr = std_socket.local_addr()?;
        std_socket.set_nonblocking(true)?;
        let mut socket = UdpSocket::from_std(std_socket);
        let candidate_ip = config.public_ip.unwrap_or(match config.bind_ip {
            ip if !ip.is_unspecified() => ip,
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
        let candidate = SocketAddr::new(candidate_ip, local_addr.port());

        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| {
                RtcError::Config("the crypto provider cannot make a DTLS certificate".into())
            })?;

        let poll = Poll::new()?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (commands, command_rx) = mpsc::channel();
        let (media, media_rx) = mpsc::sync_channel(MEDIA_QUEUE);
        let stats = Arc::new(Counters::default());
        let io = Arc::new(IoHandle {
            commands,
            media,
            waker,
            stats: stats.clone(),
        });
        let router = Router::new(
            RouterConfig {
                candidate,
                connect_timeout: config.connect_timeout,
                idle_timeout: config.idle_timeout,
                max_viewers_per_session: config.max_viewers_per_session,
            },
            cert,
            stats,
        );
        std::thread::Builder::new()
            .name("avs-rtc-io".into())
            .spawn(move || {
                IoLoop {
                    poll,
                    socket,
                    router,
                    command_rx,
                    media_rx,
                }
                .run()
            })?;
        tracing::info!(%local_addr, %candidate, "WebRTC media socket bound");
        Ok(RtcServer {
            inner: Arc::new(ServerInner {
                io,
                local_addr,
                candidate,
                config,
                next_session: AtomicU64::new(1),
            }),
        })
    }

    /// A fresh key for a session opened on this server.
    pub(crate) fn next_session_key(&self) -> SessionKey {
        SessionKey(self.inner.next_session.fetch_add(1, Relaxed))
    }

    /// The I/O thread's handle, for a session to reach it.
    pub(crate) fn io(&self) -> Arc<IoHandle> {
        self.inner.io.clone()
    }

    /// A link that keeps this server alive while a session lives.
    pub(crate) fn server_ref(&self) -> ServerRef {
        ServerRef(self.inner.clone())
    }

    pub(crate) fn config(&self) -> &RtcConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> RtcStats {
        self.inner.io.stats.snapshot()
    }

    /// The bound media socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The host candidate advertised to browsers.
    pub fn candidate_addr(&self) -> SocketAddr {
        self.inner.candidate
    }
}

fn bind_in_range(ip: IpAddr, min: u16, max: u16) -> Result<std::net::UdpSocket, RtcError> {
    let mut last_err = None;
    for port in min..=max {
        match std::net::UdpSocket::bind(SocketAddr::new(ip, port)) {
            Ok(s) => return Ok(s),
            Err(e) => last_err = Some(e),
        }
    }
    Err(RtcError::Bind {
        ip,
        port_min: min,
        port_max: max,
        source: last_err.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::AddrInUse, "empty port range")
        }),
    })
}

struct IoLoop {
    poll: Poll,
    socket: UdpSocket,
    router: Router,
    command_rx: Receiver<Command>,
    media_rx: Receiver<MediaOut>,
}

impl IoLoop {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut buf = vec![0u8; 2048];
        loop {
            let now = Instant::now();
            let timeout = self
                .router
                .next_deadline()
                .map(|d| d.saturating_duration_since(now))
                .unwrap_or(MAX_POLL)
                .min(MAX_POLL);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "media poll failed; media I/O stops");
                    break;
                }
            }
            if !self.commands() {
                break;
            }
            self.receive(&mut buf);
            self.media();
            self.router.handle_timeout(Instant::now());
            self.flush();
        }
        self.router.close_all();
        self.flush();
        tracing::debug!("media I/O thread ends");
    }

    /// `false` when the server is gone.
    fn commands(&mut self) -> bool {
        loop {
            let cmd = match self.command_rx.try_recv() {
                Ok(c) => c,
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            };
            let now = Instant::now();
            match cmd {
                Command::OpenSession { key, shared } => self.router.open_session(key, shared),
                Command::CloseSession { key } => self.router.close_session(key),
                Command::Accept {
                    key,
                    offer,
                    plan,
                    reply,
                } => {
                    let result = self.router.accept(now, key, &offer, &plan);
                    let _ = reply.send(result);
                }
                Command::Patch {
                    viewer,
                    fragment,
                    reply,
                } => {
                    let result = self.router.patch(now, viewer, &fragment);
                    let _ = reply.send(result);
                }
                Command::Leave { viewer } => self.router.leave(viewer),
                Command::Shutdown => return false,
            }
            self.flush();
        }
    }

    /// Reads until the socket is empty (mio is edge-triggered).
    fn receive(&mut self, buf: &mut [u8]) {
        loop {
            match self.socket.recv_from(buf) {
                Ok((n, source)) => {
                    self.router
                        .handle_datagram(Instant::now(), source, &buf[..n]);
                    self.flush();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors surface here on Linux (a viewer's port closed); not fatal to the socket.
                    tracing::debug!(error = %e, "media socket receive error");
                    return;
                }
            }
        }
    }

    fn media(&mut self) {
        while let Ok(m) = self.media_rx.try_recv() {
            let now = Instant::now();
            match m {
                MediaOut::Video { key, frame } => self.router.send_video(now, key, &frame),
                MediaOut::Audio { key, packet } => self.router.send_audio(now, key, &packet),
            }
            self.flush();
        }
    }

    fn flush(&mut self) {
        let stats = self.router.stats().clone();
        for t in self.router.outbox.drain(..) {
            match self.socket.send_to(&t.contents, t.destination) {
                Ok(n) => match t.kind {
                    PacketKind::Video => {
                        inc(&stats.video_packets);
                        add(&stats.video_bytes, n as u64);
                    }
                    PacketKind::Audio => {
                        inc(&stats.audio_packets);
                        add(&stats.audio_bytes, n as u64);
                    }
                    PacketKind::Other => {}
                },
                Err(e) => {
                    inc(&stats.send_dropped);
                    tracing::trace!(error = %e, to = %t.destination, "datagram not sent");
                }
            }
        }
    }
}
