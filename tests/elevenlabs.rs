//! The ElevenLabs conversational-agent client (`voice::elevenlabs`) against `FakeElevenLabs`,
//! which speaks the documented protocol on a loopback port; and a few checks of the fake itself
//! with a bare WebSocket client.
//!
//! (One file past 600 lines: one test binary for one client, its tests sharing the fake's set-up
//! and the session helpers below; a second binary would link the server crate again.)

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use avatar_supervisor::config::Secret;
use avatar_supervisor::voice::elevenlabs::{
    self, AuthMethod, Conversation, ElevenLabsConfig, ElevenLabsError, ElevenLabsHandle,
    ProviderEvent, CLOSE_GRACE,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc::Receiver;
use tokio_tungstenite::tungstenite::Message;

use support::elevenlabs::{sine, Access, FakeElevenLabs, Outcome, SignedUrlRequest};

const KEY: &str = "xi-test-key-0123456789";
/// The bound on every wait: generous for a loaded machine, never reached when things work.
const WAIT: Duration = Duration::from_secs(10);

/// `close()` returns (it waits at most its grace period, [`CLOSE_GRACE`], for the socket; the bound
/// here only catches a close that hangs).
async fn closes(handle: ElevenLabsHandle) {
    assert!(CLOSE_GRACE < WAIT);
    tokio::time::timeout(WAIT, handle.close())
        .await
        .expect("close() did not return");
}

fn config(fake: &FakeElevenLabs) -> ElevenLabsConfig {
    ElevenLabsConfig {
        http_base: fake.http_base(),
        ws_base: fake.ws_base(),
        api_key: Some(Secret::new(KEY)),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

fn start(
    config: ElevenLabsConfig,
    conversation: Conversation,
) -> (ElevenLabsHandle, Receiver<ProviderEvent>) {
    elevenlabs::start(config, conversation, support::http_client()).expect("valid settings")
}

async fn next(events: &mut Receiver<ProviderEvent>) -> ProviderEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event within the timeout")
        .expect("the events channel is still open")
}

async fn connected(events: &mut Receiver<ProviderEvent>) -> String {
    match next(events).await {
        ProviderEvent::Connected { conversation_id } => conversation_id,
        other => panic!("expected Connected, got {other:?}"),
    }
}

async fn disconnected(events: &mut Receiver<ProviderEvent>) -> (String, Duration, u32) {
    match next(events).await {
        ProviderEvent::Disconnected {
            reason,
            retry_in,
            attempt,
        } => (reason, retry_in, attempt),
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

/// The channel ends (the task is gone) within the timeout, whatever was still in it.
async fn ends(events: &mut Receiver<ProviderEvent>) {
    tokio::time::timeout(WAIT, async { while events.recv().await.is_some() {} })
        .await
        .expect("the events channel closes once the task has stopped");
}

#[tokio::test]
async fn public_agent_initiates_with_prompt_and_variables_and_receives_client_events() {
    let fake = FakeElevenLabs::start(KEY).await;
    fake.add_agent("agent_pub", Access::Public);
    let conversation = Conversation::new("agent_pub", AuthMethod::Public)
        .with_prompt("You are Ada, a patient tutor.")
        .with_variable("user_name", "Grace")
        .with_variable("visits", 3)
        .with_variable("vip", true);
    let (handle, mut events) = start(config(&fake), conversation);

    let conversation_id = connected(&mut events).await;
    let conv = fake.conversation(0, WAIT).await;
    let record = conv.record();
    assert_eq!(record.conversation_id, conversation_id);
    assert_eq!(record.agent_id, "agent_pub");
    assert!(!record.signed);
    assert_eq!(
        record.init,
        json!({
            "type": "conversation_initiation_client_data",
            "conversation_config_override": {
                "agent": {"prompt": {"prompt": "You are Ada, a patient tutor."}}
            },
            "dynamic_variables": {"user_name": "Grace", "visits": 3, "vip": true},
        })
    );
    assert!(
        fake.signed_url_requests().is_empty(),
        "a public agent needs no signed URL"
    );

    let speech = sine(640, 440.0, 16_000, 8_000);
    handle
        .contextual_update("The user opened the pricing page.")
        .unwrap();
    handle.user_message("What does it cost?").unwrap();
    handle.user_activity().unwrap();
    handle.user_audio(&speech).unwrap();
    let record = conv
        .wait_for("the four client events", WAIT, |r| r.received.len() >= 5)
        .await;
    assert_eq!(
        record.received,
        vec![
            "conversation_initiation_client_data",
            "contextual_update",
            "user_message",
            "user_activity",
            "user_audio_chunk"
        ]
    );
    assert_eq!(
        record.contextual_updates,
        vec!["The user opened the pricing page."]
    );
    assert_eq!(record.user_messages, vec!["What does it cost?"]);
    assert_eq!(record.user_activity, 1);
    assert_eq!(record.user_audio, speech, "16 kHz user audio goes as is");

    // Without a prompt, no override at all (an agent that forbids overrides would refuse one).
    let (bare, mut bare_events) = start(
        config(&fake),
        Conversation::new("agent_pub", AuthMethod::Public),
    );
    connected(&mut bare_events).await;
    let init = fake.conversation(1, WAIT).await.record().init;
    assert_eq!(
        init,
        json!({"type": "conversation_initiation_client_data", "dynamic_variables": {}})
    );

    handle.close().await;
    bare.close().await;
    fake.stop().await;
}

#[tokio::test]
async fn signed_agent_connects_through_a_url_fetched_with_the_key() {
    let fake = FakeElevenLabs::start(KEY).await;
    fake.add_agent("agent_priv", Access::Signed);
    let (handle, mut events) = start(
        config(&fake),
        Conversation::new("agent_priv", AuthMethod::Signed).with_prompt("Be brief."),
    );
    let conversation_id = connected(&mut events).await;
    assert_eq!(
        fake.signed_url_requests(),
        vec![SignedUrlRequest {
            agent_id: Some("agent_priv".into()),
            api_key: Some(KEY.into()),
            status: 200,
        }]
    );
    let record = fake.conversation(0, WAIT).await.record();
    assert!(record.signed);
    assert_eq!(record.conversation_id, conversation_id);
    assert_eq!(record.prompt(), Some("Be brief."));
    handle.close().await;

    // The same agent without a signed URL: the service upgrades, then closes with 1008.
    let (handle, mut events) = start(
        config(&fake),
        Conversation::new("agent_priv", AuthMethod::Public),
    );
    let (reason, _, attempt) = disconnected(&mut events).await;
    assert!(
        reason.contains("1008") && reason.contains("requires authorization"),
        "{reason}"
    );
    assert_eq!(attempt, 1);
    handle.close().await;
    fake.stop().await;
}

#[tokio::test]
async fn a_wrong_key_is_reported_and_retried_without_leaking_it() {
    let fake = FakeElevenLabs::start(KEY).await;
    fake.add_agent("agent_priv", Access::Signed);
    let wrong_key = "xi-not-the-key-987654";
    let settings = ElevenLabsConfig {
        api_key: Some(Secret::new(wrong_key)),
        ..config(&fake)
    };
    let (handle, mut events) = start(
        settings,
        Conversation::new("agent_priv", AuthMethod::Signed),
    );

    for expected_attempt in 1..=2 {
        let (reason, retry_in, attempt) = disconnected(&mut events).await;
        assert_eq!(attempt, expected_attempt);
        assert!(
            reason.contains("401") && reason.contains("invalid_api_key"),
            "{reason}"
        );
        assert!(!reason.contains(wrong_key), "the key leaked: {reason}");
        assert!(retry_in <= Duration::from_millis(200), "{retry_in:?}");
    }
    let requests = fake.wait_for_signed_url_requests(2, WAIT).await;
    assert!(requests
        .iter()
        .all(|r| r.status == 401 && r.api_key.as_deref() == Some(wrong_key)));
    assert!(
        fake.attempts().is_empty(),
        "no WebSocket without a signed URL"
    );
    closes(handle).await;
    ends(&mut events).await;

    // An unknown agent is refused by the WebSocket itself.
    let (handle, mut events) = start(
        config(&fake),
        Conversation::new("agent_nobody", AuthMethod::Public),
    );
    let (reason, _, _) = disconnected(&mut events).await;
    assert!(
        reason.contains("1008") && reason.contains("does not exist"),
        "{reason}"
    );
    handle.close().await;
    fake.stop().await;
}

#[tokio::test]
async fn agent_audio_and_text_arrive_decoded() {
    let fake = FakeElevenLabs::start(KEY).await;
    fake.add_agent("agent_pub", Access::Public);
    let (handle, mut events) = start(
        config(&fake),
        Conversation::new("agent_pub", AuthMethod::Public),
    );
    connected(&mut events).await;
    let conv = fake.conversation(0, WAIT).await;

    let first = sine(800, 220.0, 16_000, 12_000);
    let second = sine(480, 330.0, 16_000, -20_000);
    conv.send_audio(1, &first);
    conv.agent_response("  Hello there.  ");
    conv.send_json(json!({"type": "vad_score", "vad_score_event": {"vad_score": 0.93}}));
    conv.send_json(json!({"type": "internal_tentative_agent_response",
        "tentative_agent_response_internal_event": {"tentative_agent_response": "Hel"}}));
    conv.send_json(json!({"type": "a_type_from_the_future", "x": 1}));
    conv.send_audio(2, &second);
    conv.user_transcript("Hi!");
    conv.agent_response_correction("Hello there, how", "Hello there");

    assert_eq!(
        next(&mut events).await,
        ProviderEvent::Audio {
            event_id: 1,
            pcm: first,
            said: None,
        }
    );
    assert_eq!(
        next(&mut events).await,
        ProviderEvent::AgentResponse("Hello there.".into())
    );
    assert_eq!(
        next(&mut events).await,
        ProviderEvent::Audio {
            event_id: 2,
            pcm: second,
            said: None,
        }
    );
    assert_eq!(
        next(&mut events).await,
        ProviderEvent::UserTranscript("Hi!".into())
    );
    assert_eq!(
        next(&mut events).await,
        ProviderEvent::AgentResponseCorrection {
            original: "Hello there, how".into(),
            corrected: "Hello there".into()
        }
    );

    // A client tool call gets an error result rather than leaving the agent waiting.
    conv.send_json(json!({"type": "client_tool_call", "client_tool_call": {
        "tool_name": "open_door", "tool_call_id": "call_1", "parameters": {"door": "front"}}}));
    let record = conv
        .wait_for("the tool result", WAIT, |r| !r.other.is_empty())
        .await;
    assert_eq!(record.other[0]["type"], "client_tool_result");
    assert_eq!(record.other[0]["tool_call_id"], "call_1");
    assert_eq!(record.other[0]["is_error"], true);

    handle.close().await;
    fake.stop().await;
}

#[tokio::test]
async fn aligned_audio_says_which_sounds_when_and_a_bad_alignment_keeps_the_audio() {
    let fake = FakeElevenLabs::start(KEY).await;
    fake.add_agent("agent_pub", Access::Public);
    fake.set_audio_formats("agent_pub", "pcm_24000", "pcm_16000");
    let (handle, mut events) = start(
        config(&fake),
        Conversation::new("agent_pub", AuthMethod::Public),
    );
    connected(&mut events).await;
    let conv = fake.conversation(0, WAIT).await;

    // 600 ms at 24 kHz, six characters of 100 ms each: "Bob, m" is b ɒ b (pause) (join) m.
    conv.send_spoken(1, &sine(14_400, 200.0, 24_000, 9_000), 24_000, "Bob, m");
    let ProviderEvent::Audio {
        pcm,
        said: Some(said),
        ..
    } = next(&mut events).await
    else {
        panic!("no aligned audio")
    };
    assert!(pcm.len().abs_diff(9_600) <= 1, "{}", pcm.len());
    let said: Vec<(usize, &str)> = said.iter().map(|p| (p.at, &*p.ipa)).collect();
    assert_eq!(
        said,
        [
            (0, "b"),
            (1_600, "ɒ"),
            (3_200, "b"),
            (4_800, ""),
            (8_000, "m")
        ]
    );

    // Another script: the audio, and no timeline (the mouth follows the sound).
    conv.send_spoken(2, &sine(2_400, 200.0, 24_000, 9_000), 24_000, "Да");
    assert!(matches!(
        next(&mut events).await,
        ProviderEvent::Audio {
            said: None,
            event_id: 2,
            ..
        }
    ));

    // A malformed alignment: the audio still plays, and the error names the field.
    conv.send_json(json!({"type": "audio", "audio_event": {
        "audio_base_64": "AAAAAA==", "event_id": 3,
        "alignment": {"chars": ["a"], "char_start_times_ms": ["soon"], "char_durations_ms": [5]}}}));
    assert!(matches!(
        next(&mut events).await,
        ProviderEvent::Audio {
            said: None,
            event_id: 3,
            ..
        }
    ));
    let ProviderEvent::Error(error) = next(&mut events).await else {
        panic!("no error for the bad alignment")
    };
    assert!(
        error.contains("alignment.char_start_times_ms[0]"),
        "{error}"
    );

    handle.close().await;
    fake.stop().await;
}

#[tokio::test]
async fn other_audio_formats_are_converted_to_16_khz() {
    let fake = FakeElevenLabs::start(KEY).await;
    fake.add_agent("agent_24k", Access::Public);
    fake.set_audio_formats("agent_24k", "pcm_24000", "pcm_24000");
    fake.add_agent("agent_ulaw", Access::Public);
    fake.set_audio_formats("agent_ulaw", "ulaw_8000", "ulaw_8000");
    fake.add_agent("agent_mp3", Access::Public);
    fake.set_audio_formats("agent_mp3", "mp3_44100_128", "pcm_16000");

    // 24 kHz: a ramp stays a ramp; output k sits at input 1.5k (4.5k, halves rounded up).
    let (h24, mut e24) = start(
        config(&fake),
        Conversation::new("agent_24k", AuthMethod::Public),
    );
    connected(&mut e24).await;
    let conv = fake.conversation(0, WAIT).await;
    let ramp: Vec<i16> = (0..480).map(|i| i * 3).collect();
    conv.send_audio(7, &ramp);
    let expected: Vec<i16> = (0..320).map(|k| ((9 * k + 1) / 2) as i16).collect();
    assert_eq!(
        next(&mut e24).await,
        ProviderEvent::Audio {
            event_id: 7,
            pcm: expected,
            said: None,
        }
    );
    // User audio goes out at the agent's input rate: 320 samples at 16 kHz → 480 at 24 kHz.
    h24.user_audio(&[1000; 320]).unwrap();
    let record = conv
        .wait_for("user audio", WAIT, |r| !r.user_audio.is_empty())
        .await;
    assert!(
        (478..=480).contains(&record.user_audio.len()),
        "{}",
        record.user_audio.len()
    );
    assert!(record.user_audio.iter().all(|&s| s == 1000));

    // µ-law at 8 kHz: silence, loudest positive, loudest negative, upsampled by two.
    let (hu, mut eu) = start(
        config(&fake),
        Conversation::new("agent_ulaw", AuthMethod::Public),
    );
    connected(&mut eu).await;
    fake.conversation(1, WAIT)
        .await
        .send_audio_bytes(1, &[0xff, 0x80, 0x00]);
    assert_eq!(
        next(&mut eu).await,
        ProviderEvent::Audio {
            event_id: 1,
            pcm: vec![0, 16_062, 32_124, 0],
            said: None,
        }
    );

    // A format the client cannot decode: one error, then no audio, and the conversation goes on.
    let (hm, mut em) = start(
        config(&fake),
        Conversation::new("agent_mp3", AuthMethod::Public),
    );
    connected(&mut em).await;
    match next(&mut em).await {
        ProviderEvent::Error(e) => assert!(e.contains("mp3_44100_128"), "{e}"),
        other => panic!("expected an Error, got {other:?}"),
    }
    let conv = fake.conversation(2, WAIT).await;
    conv.send_audio_bytes(1, &[1, 2, 3, 4]);
    conv.agent_response("still here");
    assert_eq!(
        next(&mut em).await,
        ProviderEvent::AgentResponse("still here".into())
    );

    h24.close().await;
    hu.close().await;
    hm.close().await;
    fake.stop().await;
}

#[tokio::test]
async fn an_interruption_drops_late_audio_of_its_turn_only() {
    let fake = FakeElevenLabs::start(KEY).await;
    fake.add_agent("agent_pub", Access::Public);
    let (handle, mut events) = start(
        config(&fake),
        Conversation::new("agent_pub", AuthMethod::Public),
    );
    connected(&mut events).await;
    let conv = fake.conversation(0, WAIT).await;

    let chunk = |n: i16| vec![n; 160];
    conv.send_audio(1, &chunk(1));
    conv.send_audio(2, &chunk(2));
    conv.interrupt(3);
    // Late audio of the interrupted turn, at and below its id...
    conv.send_audio(3, &chunk(3));
    conv.send_audio(2, &chunk(2));
    // ...and the next turn.
    conv.send_audio(4, &chunk(4));
    conv.interrupt(2); // an older interruption moves nothing back
    conv.send_audio(5, &chunk(5));

    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(match next(&mut events).await {
            ProviderEvent::Audio { event_id, pcm, .. } => {
                assert_eq!(pcm, chunk(event_id as i16));
                format!("audio {event_id}")
            }
            ProviderEvent::Interrupted { event_id } => format!("interrupted {event_id}"),
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(
        seen,
        vec![
            "audio 1",
            "audio 2",
            "interrupted 3",
            "audio 4",
            "interrupted 2",
            "audio 5"
        ]
    );
    handle.close().await;
    fake.stop().await;
}

#[tokio::test]
async fn pings_are_answered_with_their_event_id() {
    let fake = FakeElevenLabs::start(KEY).await;
    fake.add_agent("agent_pub", Access::Public);
    let (handle, mut events) = start(
        config(&fake),
        Conversation::new("agent_pub", AuthMethod::Public),
    );
    connected(&mut events).await;
    let conv = fake.conversation(0, WAIT).await;
    conv.ping(42, Some(120));
    conv.ping(43, None);
    let record = conv
        .wait_for("two pongs", WAIT, |r| r.pongs.len() >= 2)
        .await;
    assert_eq!(record.pongs, vec![42, 43]);
    handle.close().await;
    fake.stop().await;
}

#[tokio::test]
async fn a_lost_connection_reconnects_and_initiates_again() {
    let fake = FakeElevenLabs::start(KEY).await;
    fake.add_agent("agent_pub", Access::Public);
    let conversation = Conversation::new("agent_pub", AuthMethod::Public)
        .with_prompt("First prompt.")
        .with_variable("user_name", "Grace");
    let (handle, mut events) = start(config(&fake), conversation);
    let first_id = connected(&mut events).await;
    let first = fake.conversation(0, WAIT).await;
    first.interrupt(9);

    // The network drops the line.
    assert_eq!(
        next(&mut events).await,
        ProviderEvent::Interrupted { event_id: 9 }
    );
    first.drop_connection();
    let (reason, retry_in, attempt) = disconnected(&mut events).await;
    assert!(
        reason.contains("connection"),
        "a reason that says what happened: {reason}"
    );
    assert_eq!(attempt, 1);
    assert!(
        retry_in >= Duration::from_millis(10) && retry_in <= Duration::from_millis(20),
        "{retry_in:?}"
    );
    // Sent while (probably) down: held and delivered to the next conversation.
    handle.contextual_update("Said while away.").unwrap();
    let second_id = connected(&mut events).await;
    assert_ne!(second_id, first_id, "a new conversation");
    let second = fake.conversation(1, WAIT).await;
    let record = second
        .wait_for("the held update", WAIT, |r| {
            !r.contextual_updates.is_empty()
        })
        .await;
    assert_eq!(record.init, first.record().init, "the same initiation data");
    assert_eq!(record.contextual_updates, vec!["Said while away."]);
    assert!(first.record().ended);
    // Event ids start over with the new conversation: the old interruption (9) drops nothing.
    second.send_audio(1, &[5, 6, 7]);
    assert_eq!(
        next(&mut events).await,
        ProviderEvent::Audio {
            event_id: 1,
            pcm: vec![5, 6, 7],
            said: None,
        }
    );

    // The service closes the conversation; the next one carries the prompt set meanwhile.
    handle.set_prompt(Some("Second prompt.".into())).unwrap();
    // Commands are taken in order: once this arrives, the prompt change has been taken too.
    handle.contextual_update("marker").unwrap();
    second
        .wait_for("the marker", WAIT, |r| r.contextual_updates.len() == 2)
        .await;
    second.close(1011, "internal error");
    let (reason, _, _) = disconnected(&mut events).await;
    assert!(
        reason.contains("1011") && reason.contains("internal error"),
        "{reason}"
    );
    connected(&mut events).await;
    let third = fake.conversation(2, WAIT).await.record();
    assert_eq!(third.prompt(), Some("Second prompt."));
    assert_eq!(
        third.dynamic_variables(),
        first.record().dynamic_variables()
    );

    handle.close().await;
    fake.stop().await;
}

#[tokio::test]
async fn refused_connections_are_retried_with_exponential_backoff() {
    let fake = FakeElevenLabs::start(KEY).await;
    fake.add_agent("agent_pub", Access::Public);
    fake.refuse_next(3);
    let settings = ElevenLabsConfig {
        initial_backoff: Duration::from_millis(40),
        max_backoff: Duration::from_millis(100),
        ..config(&fake)
    };
    let (handle, mut events) = start(settings, Conversation::new("agent_pub", AuthMethod::Public));

    let mut waits = Vec::new();
    for (attempt, ceiling_ms) in [(1, 40), (2, 80), (3, 100)] {
        let (reason, retry_in, got) = disconnected(&mut events).await;
        assert_eq!(got, attempt);
        assert!(reason.contains("503"), "{reason}");
        let ceiling = Duration::from_millis(ceiling_ms);
        assert!(
            retry_in >= ceiling / 2 && retry_in <= ceiling,
            "attempt {attempt}: {retry_in:?} not within [{:?}, {ceiling:?}]",
            ceiling / 2
        );
        waits.push(retry_in);
    }
    connected(&mut events).await;

    let attempts = fake.wait_for_attempts(4, WAIT).await;
    let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome.clone()).collect();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Refused,
            Outcome::Refused,
            Outcome::Refused,
            Outcome::Accepted
        ]
    );
    for (i, wait) in waits.iter().enumerate() {
        let gap = attempts[i + 1].at - attempts[i].at;
        assert!(
            gap >= *wait,
            "try {} came {gap:?} after the last, before its wait {wait:?}",
            i + 2
        );
    }
    handle.close().await;
    fake.stop().await;
}

#[tokio::test]
async fn closing_stops_the_task_and_the_socket() {
    let fake = FakeElevenLabs::start(KEY).await;
    fake.add_agent("agent_pub", Access::Public);

    // close(): a normal close frame, promptly, and the events channel ends.
    let (handle, mut events) = start(
        config(&fake),
        Conversation::new("agent_pub", AuthMethod::Public),
    );
    connected(&mut events).await;
    let conv = fake.conversation(0, WAIT).await;
    closes(handle).await;
    let record = conv.wait_for("the close", WAIT, |r| r.ended).await;
    assert_eq!(record.client_close, Some((1000, String::new())));
    ends(&mut events).await;

    // Dropping the handle: the task and its socket go at once.
    let (handle, mut events) = start(
        config(&fake),
        Conversation::new("agent_pub", AuthMethod::Public),
    );
    connected(&mut events).await;
    let conv = fake.conversation(1, WAIT).await;
    drop(handle);
    conv.wait_for("the socket to go", WAIT, |r| r.ended).await;
    ends(&mut events).await;

    // Closing while waiting to retry.
    fake.refuse_next(usize::MAX);
    let (handle, mut events) = start(
        ElevenLabsConfig {
            // Longer than `WAIT`: a close that waited for the retry would not return in time.
            initial_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
            ..config(&fake)
        },
        Conversation::new("agent_pub", AuthMethod::Public),
    );
    disconnected(&mut events).await;
    closes(handle).await;
    ends(&mut events).await;
    fake.refuse_next(0);

    // Dropping the events receiver ends the conversation too; the handle then says so.
    let (handle, events) = start(
        config(&fake),
        Conversation::new("agent_pub", AuthMethod::Public),
    );
    let conv = fake.conversation(2, WAIT).await;
    drop(events);
    conv.wait_for("the close", WAIT, |r| r.ended).await;
    tokio::time::timeout(WAIT, async {
        while !handle.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the task ends");
    assert_eq!(
        handle.contextual_update("anyone?"),
        Err(ElevenLabsError::Closed)
    );
    fake.stop().await;
}

#[tokio::test]
async fn a_consumer_that_stops_reading_loses_bounded_audio_and_is_told() {
    let fake = FakeElevenLabs::start(KEY).await;
    fake.add_agent("agent_pub", Access::Public);
    let settings = ElevenLabsConfig {
        event_buffer: 2,
        // 1,600 samples: five chunks of 320.
        max_backlog_audio: Duration::from_millis(100),
        ..config(&fake)
    };
    let (handle, mut events) = start(settings, Conversation::new("agent_pub", AuthMethod::Public));
    connected(&mut events).await;
    let conv = fake.conversation(0, WAIT).await;

    // Twenty chunks while nobody reads, then a ping: its pong proves all twenty were taken in.
    for id in 1..=20u64 {
        conv.send_audio(id, &[id as i16; 320]);
    }
    conv.ping(99, None);
    conv.wait_for("the pong", WAIT, |r| r.pongs == [99]).await;

    let mut delivered = Vec::new();
    // Two fit in the channel, five in the backlog; thirteen were dropped between them.
    for _ in 0..8 {
        match next(&mut events).await {
            ProviderEvent::Audio { event_id, pcm, .. } => {
                assert_eq!(pcm.len(), 320);
                delivered.push(event_id);
            }
            ProviderEvent::Dropped {
                audio_events,
                audio_samples,
                other_events,
            } => {
                assert_eq!((audio_events, audio_samples, other_events), (13, 4_160, 0));
                delivered.push(0);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(delivered, vec![1, 2, 0, 16, 17, 18, 19, 20]);
    handle.close().await;
    fake.stop().await;
}

#[tokio::test]
async fn fake_signed_url_endpoint_answers_like_elevenlabs() {
    let fake = FakeElevenLabs::start(KEY).await;
    fake.add_agent("agent_priv", Access::Signed);
    let http = support::http_client();
    let endpoint = format!("{}/v1/convai/conversation/get-signed-url", fake.http_base());
    let get = |query: &'static str, key: Option<&'static str>| {
        let mut request = http.get(format!("{endpoint}{query}"));
        if let Some(key) = key {
            request = request.header("xi-api-key", key);
        }
        async move {
            let response = request.send().await.expect("the fake answers");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("a JSON body"))
        }
    };

    let (status, body) = get("?agent_id=agent_priv", None).await;
    assert_eq!(
        (status, body["detail"]["status"].as_str()),
        (401, Some("needs_authorization"))
    );
    let (status, body) = get("?agent_id=agent_priv", Some("nope")).await;
    assert_eq!(
        (status, body["detail"]["status"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let (status, body) = get("", Some(KEY)).await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["loc"], json!(["query", "agent_id"]));
    let (status, _) = get("?agent_id=agent_other", Some(KEY)).await;
    assert_eq!(status, 404);
    let (status, body) = get("?agent_id=agent_priv", Some(KEY)).await;
    assert_eq!(status, 200);
    let signed_url = body["signed_url"].as_str().expect("a signed_url");
    assert!(
        signed_url.starts_with(&format!(
            "{}/v1/convai/conversation?agent_id=agent_priv&conversation_signature=",
            fake.ws_base()
        )),
        "{signed_url}"
    );

    // The signed URL works once the client speaks first; a tampered one is refused.
    let (mut ws, _) = tokio_tungstenite::connect_async(signed_url)
        .await
        .expect("upgrade");
    ws.send(Message::text(
        json!({"type": "conversation_initiation_client_data"}).to_string(),
    ))
    .await
    .unwrap();
    let metadata: Value = match ws.next().await {
        Some(Ok(Message::Text(text))) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected the metadata, got {other:?}"),
    };
    assert_eq!(metadata["type"], "conversation_initiation_metadata");
    let event = &metadata["conversation_initiation_metadata_event"];
    assert!(event["conversation_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("conv_")));
    assert_eq!(event["agent_output_audio_format"], "pcm_16000");
    drop(ws);

    let tampered = format!("{signed_url}x");
    let (mut ws, _) = tokio_tungstenite::connect_async(tampered.as_str())
        .await
        .expect("upgrade");
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert_eq!(frame.reason.as_str(), "Invalid conversation signature");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    fake.stop().await;
}

#[tokio::test]
async fn fake_insists_on_initiation_data_first() {
    let fake = FakeElevenLabs::start(KEY).await;
    fake.add_agent("agent_pub", Access::Public);
    let url = format!(
        "{}/v1/convai/conversation?agent_id=agent_pub",
        fake.ws_base()
    );
    for first in [
        json!({"type": "user_message", "text": "hi"}),
        json!({"type": "conversation_initiation_client_data", "dynamic_variables": {"x": [1]}}),
    ] {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("upgrade");
        ws.send(Message::text(first.to_string())).await.unwrap();
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1008),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    assert!(fake.conversations().is_empty());
    assert!(fake
        .attempts()
        .iter()
        .all(|a| matches!(a.outcome, Outcome::Closed { code: 1008, .. })));
    fake.stop().await;
}
