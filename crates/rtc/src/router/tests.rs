//! The router driven by a str0m client through memory, on a virtual clock.

use std::sync::atomic::Ordering::Relaxed;

use str0m::change::SdpAnswer;
use str0m::media::MediaKind;
use str0m::Event;

use super::*;
use crate::mic::MicQueue;
use crate::offer::plan_offer;
use crate::vp8::Vp8Encoder;

const SERVER: &str = "127.0.0.1:5000";
const CLIENT: &str = "127.0.0.1:6000";

/// A router with a fresh certificate and one open session (key 1); its counters and the session.
fn one_session(cfg: RouterConfig, now: Instant) -> (Router, Arc<Counters>, Arc<SessionShared>) {
    let stats = Arc::new(Counters::default());
    let cert = str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
        .unwrap();
    let mut router = Router::new(cfg, cert, stats.clone());
    let shared = Arc::new(SessionShared::new("t", now, Arc::new(MicQueue::default())));
    router.open_session(SessionKey(1), shared.clone());
    (router, stats, shared)
}

/// A str0m client and the router talking through memory, on a virtual clock.
struct Net {
    router: Router,
    client: Rtc,
    now: Instant,
    shared: Arc<SessionShared>,
    stats: Arc<Counters>,
    client_frames: Vec<(bool, usize)>,
    client_closed: bool,
}

impl Net {
    fn new(idle: Duration, connect: Duration) -> (Net, ViewerId) {
        let now = Instant::now();
        let (mut router, stats, shared) = one_session(
            RouterConfig {
                candidate: SERVER.parse().unwrap(),
                connect_timeout: connect,
                idle_timeout: idle,
                max_viewers_per_session: 1,
            },
            now,
        );

        let mut client = Rtc::builder().build(now);
        client.add_local_candidate(Candidate::host(CLIENT.parse().unwrap(), "udp").unwrap());
        let mut change = client.sdp_api();
        change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let offer = offer.to_sdp_string();
        let plan = plan_offer(&offer).unwrap();
        let (id, answer) = router.accept(now, SessionKey(1), &offer, &plan).unwrap();
        let err = router
            .accept(now, SessionKey(1), &offer, &plan)
            .unwrap_err();
        assert!(matches!(err, RtcError::TooManyViewers(1)), "{err}");
        client
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        let net = Net {
            router,
            client,
            now,
            shared,
            stats,
            client_frames: Vec::new(),
            client_closed: false,
        };
        (net, id)
    }

    /// Drains the client after one mutation: its datagrams go straight to the router.
    fn drain_client(&mut self) {
        let now = self.now;
        loop {
            match self.client.poll_output().unwrap() {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    self.router
                        .handle_datagram(now, CLIENT.parse().unwrap(), &t.contents)
                }
                Output::Event(Event::MediaData(d)) => {
                    self.client_frames.push((d.is_keyframe(), d.data.len()))
                }
                Output::Event(Event::Closed) => self.client_closed = true,
                Output::Event(_) => {}
            }
        }
    }

    /// Delivers the router's datagrams to the client (or drops them, for a frozen client).
    fn deliver(&mut self, client_alive: bool) {
        // Datagrams the client sends in reply reach the router, whose replies land in the outbox
        // again: repeat until quiet.
        while !self.router.outbox.is_empty() {
            for t in std::mem::take(&mut self.router.outbox) {
                if !client_alive {
                    continue;
                }
                let input = Input::Receive(
                    self.now,
                    Receive {
                        proto: Protocol::Udp,
                        source: SERVER.parse().unwrap(),
                        destination: t.destination,
                        contents: t.contents.as_slice().try_into().unwrap(),
                    },
                );
                self.client.handle_input(input).unwrap();
                self.drain_client();
            }
        }
    }

    /// Advances the virtual clock by `step` and moves every datagram both ways; `client_alive: false`
    /// drops what reaches the client and lets it send nothing (a frozen tab).
    fn tick(&mut self, step: Duration, client_alive: bool) {
        self.now += step;
        if client_alive {
            self.client.handle_input(Input::Timeout(self.now)).unwrap();
            self.drain_client();
        }
        self.router.handle_timeout(self.now);
        self.deliver(client_alive);
    }
}

#[test]
fn sans_io_viewer_connects_waits_for_a_keyframe_then_times_out_on_a_virtual_clock() {
    let (mut net, id) = Net::new(Duration::from_secs(3), Duration::from_secs(5));
    assert_eq!(net.shared.counts(), (1, 0, 0, false));
    for _ in 0..400 {
        net.tick(Duration::from_millis(5), true);
        if net.shared.counts_peek().1 == 1 {
            break;
        }
    }
    // Connected, video and audio up, and the new viewer asked for a keyframe.
    assert_eq!(net.shared.counts(), (1, 1, 1, true));
    assert_eq!(net.stats.connections_connected.load(Relaxed), 1);
    assert_eq!(net.stats.keyframe_requests.load(Relaxed), 1);

    let mut enc = Vp8Encoder::new(64, 48, 25, 200_000).unwrap();
    let (y, u, v) = (
        vec![90u8; 64 * 48],
        vec![128u8; 32 * 24],
        vec![128u8; 32 * 24],
    );
    let mut frame = |i: u64, key: bool| {
        let f = enc.encode(&y, &u, &v, i * 3600, key).unwrap().unwrap();
        EncodedVideo {
            keyframe: f.keyframe,
            data: f.data.into(),
            rtp_time: i * 3600,
            captured: net.now,
        }
    };
    let first = frame(0, false);
    let delta = frame(1, false);
    let key = frame(2, true);
    let now = net.now;
    // A delta before the viewer's first keyframe is withheld and counted.
    net.router.send_video(now, SessionKey(1), &delta);
    assert!(net
        .router
        .outbox
        .iter()
        .all(|t| t.kind != PacketKind::Video));
    assert_eq!(net.stats.frames_dropped_viewer.load(Relaxed), 1);
    net.router.send_video(now, SessionKey(1), &key);
    assert!(net
        .router
        .outbox
        .iter()
        .any(|t| t.kind == PacketKind::Video));
    net.tick(Duration::from_millis(5), true);
    assert_eq!(net.client_frames, vec![(true, key.data.len())]);
    drop(first);

    // The client goes silent: removed once the idle timeout passes, not before.
    for _ in 0..29 {
        net.tick(Duration::from_millis(100), false);
    }
    assert_eq!(net.shared.counts_peek().0, 1);
    for _ in 0..3 {
        net.tick(Duration::from_millis(100), false);
    }
    assert_eq!(net.shared.counts(), (0, 0, 0, false));
    assert_eq!(net.stats.connections_timed_out.load(Relaxed), 1);
    assert_eq!(net.stats.viewers.load(Relaxed), 0);
    assert!(net
        .router
        .patch(net.now, id, "a=end-of-candidates")
        .is_err());
}

#[test]
fn answers_a_real_chromium_offer_with_vp8_and_opus_only() {
    let now = Instant::now();
    let (mut router, _, _) = one_session(
        RouterConfig {
            candidate: "192.0.2.7:40000".parse().unwrap(),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_viewers_per_session: 4,
        },
        now,
    );
    let offer = include_str!("../testdata/chromium-156-offer.sdp");
    let plan = plan_offer(offer).unwrap();
    let (_, answer) = router.accept(now, SessionKey(1), offer, &plan).unwrap();
    let has = |l: &str| answer.lines().any(|x| x.trim() == l);
    assert!(has("a=ice-lite"), "{answer}");
    assert!(
        answer.contains("192.0.2.7 40000 typ host"),
        "the public candidate: {answer}"
    );
    assert!(
        has("a=setup:passive") && has("a=sendonly") && has("a=sendrecv"),
        "{answer}"
    );
    let rtpmaps: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("a=rtpmap"))
        .collect();
    assert_eq!(
        rtpmaps,
        [
            "a=rtpmap:96 VP8/90000",
            "a=rtpmap:97 rtx/90000",
            "a=rtpmap:111 opus/48000/2"
        ]
    );
}

#[test]
fn sans_io_leave_closes_politely_and_never_connecting_fails() {
    let (mut net, id) = Net::new(Duration::from_secs(10), Duration::from_secs(5));
    while net.shared.counts_peek().1 == 0 {
        net.tick(Duration::from_millis(5), true);
    }
    net.router.leave(id);
    assert!(!net.router.outbox.is_empty(), "BYE and close_notify go out");
    net.deliver(true);
    assert!(
        net.client_closed || !net.client.is_alive(),
        "the client saw the close"
    );
    assert_eq!(net.stats.connections_closed.load(Relaxed), 1);
    assert_eq!(net.stats.connections_failed.load(Relaxed), 0);

    let (mut net, _) = Net::new(Duration::from_secs(10), Duration::from_secs(2));
    for _ in 0..21 {
        net.tick(Duration::from_millis(100), false);
    }
    assert_eq!(net.stats.connections_failed.load(Relaxed), 1);
    assert_eq!(net.shared.counts_peek().0, 0);
    assert_eq!(net.router.next_deadline(), None);
}
