//! Self-tests of the fakes in `tests/support/`, against the real third-party clients: the fakes
//! are only worth something if `livekit-api` cannot tell them from the real thing.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use hmac::{Hmac, Mac};
use livekit_api::access_token::{AccessToken, TokenVerifier, VideoGrants};
use livekit_api::services::room::{CreateRoomOptions, RoomClient};
use livekit_api::services::{ServerError, ServiceError};
use livekit_api::webhooks::{WebhookError, WebhookReceiver};
use livekit_protocol as proto;
use sha2::Sha256;

use support::livekit::{FakeLiveKit, LiveKitWebhookSender};
use support::webhook_sink::{signature_timestamp, verify_signature, WebhookSink};

const KEY: &str = "APIfaketestkey";
const SECRET: &str = "fake-livekit-secret-that-is-long-enough";

fn client(fake: &FakeLiveKit, secret: &str) -> RoomClient {
    RoomClient::with_api_key(&fake.url(), KEY, secret)
        .with_failover(false)
        .with_request_timeout(Duration::from_secs(5))
}

/// The Twirp error code of a failed call, or a description of the non-Twirp failure.
fn twirp_code(error: ServiceError) -> String {
    match error {
        ServiceError::Twirp(ServerError::Twirp(code)) => code.code,
        other => format!("not a Twirp error: {other}"),
    }
}

#[actix_web::test]
async fn room_service_round_trip() {
    let fake = FakeLiveKit::start(KEY, SECRET).await;
    let rooms = client(&fake, SECRET);

    let options = CreateRoomOptions {
        empty_timeout: 60,
        max_participants: 8,
        metadata: "{\"session\":\"s1\"}".into(),
        ..Default::default()
    };
    let room = rooms
        .create_room("room-a", options.clone())
        .await
        .expect("CreateRoom");
    assert!(room.sid.starts_with("RM_"), "sid {:?}", room.sid);
    assert_eq!(room.name, "room-a");
    assert_eq!(room.empty_timeout, 60);
    assert_eq!(room.departure_timeout, 20, "server default");
    assert_eq!(room.max_participants, 8);
    assert_eq!(room.metadata, "{\"session\":\"s1\"}");
    assert!(room.creation_time > 0);

    // CreateRoom is idempotent: same room, same sid.
    let again = rooms
        .create_room("room-a", CreateRoomOptions::default())
        .await
        .expect("CreateRoom again");
    assert_eq!(again.sid, room.sid);
    assert_eq!(
        again.empty_timeout, 60,
        "zero fields leave the room as it was"
    );

    let listed = rooms
        .list_rooms(vec!["room-a".into(), "room-missing".into()])
        .await
        .expect("ListRooms");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].sid, room.sid);
    assert_eq!(
        rooms.list_rooms(vec![]).await.expect("ListRooms all").len(),
        1
    );

    assert!(rooms
        .list_participants("room-a")
        .await
        .expect("ListParticipants")
        .is_empty());
    fake.add_participant("room-a", "user-1");
    let participants = rooms
        .list_participants("room-a")
        .await
        .expect("ListParticipants");
    assert_eq!(participants.len(), 1);
    assert_eq!(participants[0].identity, "user-1");
    assert_eq!(
        participants[0].state,
        proto::participant_info::State::Active as i32
    );

    assert!(fake.remove_participant("room-a", "user-1"));
    assert!(!fake.remove_participant("room-a", "user-1"));
    assert_eq!(fake.room("room-a").expect("room-a exists").sid, room.sid);

    rooms.delete_room("room-a").await.expect("DeleteRoom");
    assert!(fake.rooms().is_empty());
    let gone = rooms
        .delete_room("room-a")
        .await
        .expect_err("DeleteRoom of a deleted room");
    assert_eq!(twirp_code(gone), "not_found");

    assert_eq!(fake.created(), vec!["room-a", "room-a"]);
    assert_eq!(fake.deleted(), vec!["room-a"]);
    assert_eq!(
        fake.calls(),
        vec![
            "CreateRoom",
            "CreateRoom",
            "ListRooms",
            "ListRooms",
            "ListParticipants",
            "ListParticipants",
            "DeleteRoom",
            "DeleteRoom"
        ]
    );
    assert_eq!(fake.request_count(), 8);
    fake.stop().await;
}

#[actix_web::test]
async fn room_service_refuses_bad_credentials_and_grants() {
    let fake = FakeLiveKit::start(KEY, SECRET).await;

    // A token signed with the wrong secret is stopped by LiveKit's auth middleware, which answers
    // a plain-text 401: the client sees a body it cannot parse, not a Twirp error.
    let wrong = client(&fake, "not-the-secret")
        .create_room("room-a", CreateRoomOptions::default())
        .await
        .expect_err("wrong secret");
    assert!(
        matches!(wrong, ServiceError::Twirp(ServerError::Request(_))),
        "{wrong:?}"
    );
    assert!(fake.rooms().is_empty());

    // A valid token without the needed grant reaches the service: Twirp `unauthenticated`.
    let list_only = AccessToken::with_api_key(KEY, SECRET)
        .with_grants(VideoGrants {
            room_list: true,
            ..Default::default()
        })
        .to_jwt()
        .expect("token");
    let limited = RoomClient::with_token(&fake.url(), &list_only).with_failover(false);
    let refused = limited
        .create_room("room-a", CreateRoomOptions::default())
        .await
        .expect_err("no room_create grant");
    assert_eq!(twirp_code(refused), "unauthenticated");
    limited
        .list_rooms(vec![])
        .await
        .expect("room_list grant suffices");

    // Admin grants are per room.
    let other_room_admin = AccessToken::with_api_key(KEY, SECRET)
        .with_grants(VideoGrants {
            room_admin: true,
            room: "room-b".into(),
            ..Default::default()
        })
        .to_jwt()
        .expect("token");
    let refused = RoomClient::with_token(&fake.url(), &other_room_admin)
        .with_failover(false)
        .list_participants("room-a")
        .await
        .expect_err("admin of another room");
    assert_eq!(twirp_code(refused), "unauthenticated");

    // Unavailable: 503 Twirp `unavailable`, and back again afterwards.
    let rooms = client(&fake, SECRET);
    fake.set_unavailable(true);
    let down = rooms
        .create_room("room-a", CreateRoomOptions::default())
        .await
        .expect_err("unavailable");
    assert_eq!(twirp_code(down), "unavailable");
    assert!(fake.created().is_empty());
    fake.set_unavailable(false);
    rooms
        .create_room("room-a", CreateRoomOptions::default())
        .await
        .expect("available again");
    assert_eq!(fake.rooms(), vec!["room-a"]);

    // LiveKit closing a room by itself: gone from ListRooms without a DeleteRoom.
    assert!(fake.close_room("room-a"));
    assert!(rooms
        .list_rooms(vec!["room-a".into()])
        .await
        .expect("ListRooms")
        .is_empty());
    assert!(fake.deleted().is_empty());

    // Anything that is not a RoomService route is a Twirp bad_route.
    let response = support::http_client()
        .get(format!(
            "{}/twirp/livekit.RoomService/ListRooms",
            fake.url()
        ))
        .send()
        .await
        .expect("GET reaches the fake");
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.expect("Twirp error JSON");
    assert_eq!(body["code"], "bad_route");
}

#[actix_web::test]
async fn webhook_sender_output_passes_livekits_own_receiver() {
    let sink = WebhookSink::start().await;
    let sender = LiveKitWebhookSender {
        target_url: sink.url("/livekit/webhook"),
        api_key: KEY.into(),
        api_secret: SECRET.into(),
    };
    let receiver = WebhookReceiver::new(TokenVerifier::with_api_key(KEY, SECRET));
    // The fake LiveKit hands out senders with its own credentials.
    let from_fake = FakeLiveKit::start(KEY, SECRET)
        .await
        .webhook_sender(sink.url("/x"));
    assert_eq!(
        (from_fake.api_key.as_str(), from_fake.api_secret.as_str()),
        (KEY, SECRET)
    );

    let response = sender
        .send("participant_joined", "room-a", Some("user-1"))
        .await;
    assert_eq!(response.status(), 200);
    let got = sink
        .wait_for(|r| r.path == "/livekit/webhook", Duration::from_secs(2))
        .await
        .expect("the webhook arrived");
    assert_eq!(got.header("content-type"), Some("application/webhook+json"));
    let auth = got.header("authorization").expect("signed");
    assert!(!auth.starts_with("Bearer "), "LiveKit sends a bare JWT");
    // Go protojson (single-line) style: camelCase, int64 as strings, enum names, ", " separators.
    assert!(got.body.contains("\"createdAt\":\""), "{}", got.body);
    assert!(got.body.contains("\"state\":\"ACTIVE\""), "{}", got.body);
    assert!(got.body.contains(", \""), "{}", got.body);

    let event = receiver
        .receive(&got.body, auth)
        .expect("LiveKit's receiver accepts it");
    assert_eq!(event.event, "participant_joined");
    assert!(event.id.starts_with("EV_"));
    assert!(event.created_at > 0);
    let room = event.room.expect("room");
    assert_eq!(room.name, "room-a");
    assert!(room.sid.starts_with("RM_"));
    let participant = event.participant.expect("participant");
    assert_eq!(participant.identity, "user-1");
    assert!(participant.sid.starts_with("PA_"));
    // The plain serde path production code may use parses it too.
    let parsed: proto::WebhookEvent = serde_json::from_str(&got.body).expect("serde parse");
    assert_eq!(parsed.participant.expect("participant").identity, "user-1");

    // Successive events about the same room agree on its sid.
    let left = sender.event("participant_left", "room-a", Some("user-1"));
    assert_eq!(left.room.as_ref().expect("room").sid, room.sid);
    assert_eq!(
        left.participant.as_ref().expect("participant").state,
        proto::participant_info::State::Disconnected as i32
    );

    // A tampered body no longer matches the signed hash.
    let tampered = got.body.replace("user-1", "user-2");
    assert!(matches!(
        receiver.receive(&tampered, auth),
        Err(WebhookError::InvalidSignature)
    ));
    // A signature from someone with another secret fails verification outright.
    let forger = LiveKitWebhookSender {
        api_secret: "another-secret-of-decent-length".into(),
        ..sender.clone()
    };
    assert!(matches!(
        receiver.receive(&got.body, &forger.sign(&got.body)),
        Err(WebhookError::InvalidAuth(_))
    ));

    // send_raw posts exactly what it is given.
    sink.clear();
    let response = sender.send_raw("{}", None).await;
    assert_eq!(response.status(), 200);
    let raw = sink.received();
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].body, "{}");
    assert_eq!(raw[0].header("authorization"), None);
    sink.stop().await;
}

#[actix_web::test]
async fn webhook_sink_records_and_fails_on_demand() {
    let sink = WebhookSink::start().await;
    let http = support::http_client();

    sink.fail_next(2);
    let mut statuses = Vec::new();
    for n in 0..3 {
        let response = http
            .post(sink.url("hooks/a?x=1"))
            .header("X-Webhook-Id", "wh_1")
            .header("content-type", "application/json")
            .body(format!("{{\"n\":{n}}}"))
            .send()
            .await
            .expect("POST to the sink");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, vec![500, 500, 200]);

    let received = sink.wait_for_count(3, Duration::from_secs(2)).await;
    assert_eq!(received.len(), 3);
    assert_eq!(
        received.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    assert_eq!(received[0].path, "/hooks/a");
    assert_eq!(received[0].query, "x=1");
    assert_eq!(received[0].header("x-webhook-id"), Some("wh_1"));
    assert_eq!(received[2].json()["n"], 2);
    assert!(received[0].at <= received[2].at);

    let found = sink
        .wait_for(|r| r.body.contains("\"n\":1"), Duration::from_secs(1))
        .await
        .expect("second delivery");
    assert_eq!(found.status, 500);
    let started = std::time::Instant::now();
    assert!(sink
        .wait_for(|r| r.path == "/never", Duration::from_millis(100))
        .await
        .is_none());
    assert!(started.elapsed() < Duration::from_secs(1));

    // GETs are not webhooks and are not recorded.
    let response = http.get(sink.url("/hooks/a")).send().await.expect("GET");
    assert_eq!(response.status(), 405);
    assert_eq!(sink.received().len(), 3);
    sink.stop().await;
}

#[test]
fn signature_scheme() {
    let body = "{\"event\":\"session.ended\"}";
    let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec").expect("any key length");
    mac.update(format!("1700000000.{body}").as_bytes());
    let header = format!(
        "t=1700000000,v1={}",
        hex::encode(mac.finalize().into_bytes())
    );

    assert!(verify_signature("whsec", &header, body));
    assert_eq!(signature_timestamp(&header), Some(1_700_000_000));
    assert!(!verify_signature("other", &header, body));
    assert!(!verify_signature(
        "whsec",
        &header,
        "{\"event\":\"session.started\"}"
    ));
    // The timestamp is part of what is signed.
    let moved = header.replace("t=1700000000", "t=1700000001");
    assert!(!verify_signature("whsec", &moved, body));
    // Several v1 entries: any one may match; garbage never does.
    let rotated = header.replace("v1=", "v1=00ff,v1=");
    assert!(verify_signature("whsec", &rotated, body));
    assert!(!verify_signature("whsec", "v1=abc", body));
    assert!(!verify_signature("whsec", "", body));
}
