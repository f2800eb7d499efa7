//! LiveKit Agents' avatar protocol, the avatar's side (`livekit-agents` `voice/avatar`): in a room
//! the caller brought, the room's agent speaks through the avatar.
//! - Its speech arrives as byte streams on `lk.audio_stream`, one per segment, with the string
//!   attributes `sample_rate` and `num_channels`, raw s16 interleaved PCM; the stream's close is
//!   the segment's end. Only the agent's streams are taken (the identity in the avatar token's
//!   `lk.publish_on_behalf`, else the first participant of kind agent); each is resampled to the
//!   voice's 16 kHz mono and played through the session's player, so the mouth follows it.
//! - `lk.clear_buffer` (payload `""`, from the agent) drops what has not played and answers
//!   `"ok"`; from anyone else, `"reject"`.
//! - The agent is told `lk.playback_started` (payload `""`) at a segment's first played audio,
//!   and `lk.playback_finished` exactly once per segment, with exactly the keys
//!   `playback_position` (seconds played), `interrupted` and `synchronized_transcript` (null).
//!
//! [`AgentLink`] reads the room's events on the transport's task; the notices go out one at a time,
//! in order, from a task of their own ([`notify_agent`]), retried until the agent has them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use avs_livekit_ffi::{AvatarRoom, LkError, RoomEvent, RpcErrorCode, RpcInvocation};

use tokio::sync::{mpsc, watch};

use super::messages::{AgentAudio, PlaybackNotice};
use crate::domain::backoff::Backoff;
use crate::metrics::Metrics;
use crate::voice::resample::Resampler;

pub const AUDIO_STREAM_TOPIC: &str = "lk.audio_stream";
pub const RPC_CLEAR_BUFFER: &str = "lk.clear_buffer";
pub const RPC_PLAYBACK_STARTED: &str = "lk.playback_started";
pub const RPC_PLAYBACK_FINISHED: &str = "lk.playback_finished";

/// What the link asks of the transport after an event.
#[derive(Debug, PartialEq)]
pub enum LinkAction {
    /// Audio for the session's voice.
    Audio(AgentAudio),
    /// The agent left the room: the session is over (`room_closed`).
    AgentLeft(String),
    /// Answer an RPC call (the transport does, at once).
    Answer {
        invocation_id: u64,
        method: String,
        result: Result<String, (RpcErrorCode, String)>,
    },
}

/// One segment being received.
struct Incoming {
    segment: u64,
    resampler: Resampler,
    /// A byte of a sample cut between two chunks.
    odd_byte: Option<u8>,
    /// `lk.clear_buffer` came while it was open: the rest of it is dropped, its end not said
    /// again (the player already ended it as interrupted).
    cleared: bool,
}

pub struct AgentLink {
    /// From the avatar's token (`lk.publish_on_behalf`), when it names one.
    expected: Option<String>,
    agent: watch::Sender<Option<String>>,
    streams: HashMap<String, Incoming>,
    next_segment: u64,
    metrics: Metrics,
}

impl AgentLink {
    pub fn new(expected: Option<String>, metrics: Metrics) -> Self {
        let (agent, _) = watch::channel(expected.clone());
        Self {
            expected,
            agent,
            streams: HashMap::new(),
            next_segment: 1,
            metrics,
        }
    }

    /// Who the agent is, as the notifier needs it (`None` until it is known).
    pub fn agent(&self) -> watch::Receiver<Option<String>> {
        self.agent.subscribe()
    }

    fn is_agent(&self, identity: &str) -> bool {
        self.agent.borrow().as_deref() == Some(identity)
    }

    /// Takes the events of the protocol. Events that are not the protocol's give nothing.
    pub fn on_event(&mut self, event: &RoomEvent) -> Vec<LinkAction> {
        match event {
            RoomEvent::ParticipantJoined { identity, agent } => {
                let known = self.agent.borrow().is_some();
                if !known && self.expected.is_none() && *agent {
                    tracing::info!(agent = %identity, "the room's agent joined");
                    self.agent.send_replace(Some(identity.clone()));
                }
                vec![]
            }
            RoomEvent::ParticipantLeft { identity } if self.is_agent(identity) => {
                vec![LinkAction::AgentLeft(identity.clone())]
            }
            RoomEvent::ByteStreamOpened {
                stream_id,
                identity,
                topic,
                attributes,
                ..
            } if topic == AUDIO_STREAM_TOPIC => self.opened(stream_id, identity, attributes),
            RoomEvent::ByteStreamChunk { stream_id, bytes } => self.chunk(stream_id, bytes),
            RoomEvent::ByteStreamClosed { stream_id, error } => self.closed(stream_id, error),
            RoomEvent::RpcInvocation(invocation) => self.invoked(invocation),
            _ => vec![],
        }
    }

    fn refuse_stream(&self, why: &'static str, identity: &str) {
        tracing::warn!(%identity, why, "an audio stream was refused");
        self.metrics
            .livekit_agent_streams
            .with_label_values(&[why])
            .inc();
    }

    fn opened(
        &mut self,
        stream_id: &str,
        identity: &str,
        attributes: &HashMap<String, String>,
    ) -> Vec<LinkAction> {
        if !self.is_agent(identity) {
            self.refuse_stream("not_the_agent", identity);
            return vec![];
        }
        let number = |key: &str| {
            attributes
                .get(key)
                .and_then(|v| v.trim().parse::<u32>().ok())
        };
        let (Some(rate), Some(channels)) = (number("sample_rate"), number("num_channels")) else {
            self.refuse_stream("no_format", identity);
            return vec![];
        };
        if !(8_000..=192_000).contains(&rate) || !(1..=8).contains(&channels) {
            self.refuse_stream("bad_format", identity);
            return vec![];
        }
        let Ok(resampler) = Resampler::new(rate, crate::voice::SAMPLE_RATE, channels as usize)
        else {
            self.refuse_stream("bad_format", identity);
            return vec![];
        };
        if rate != crate::voice::SAMPLE_RATE || channels != 1 {
            self.metrics.livekit_agent_resampled.inc();
        }
        self.metrics
            .livekit_agent_streams
            .with_label_values(&["accepted"])
            .inc();
        let segment = self.next_segment;
        self.next_segment += 1;
        self.streams.insert(
            stream_id.to_string(),
            Incoming {
                segment,
                resampler,
                odd_byte: None,
                cleared: false,
            },
        );
        vec![LinkAction::Audio(AgentAudio::Segment {
            segment,
            pcm: Vec::new(),
        })]
    }

    fn chunk(&mut self, stream_id: &str, bytes: &[u8]) -> Vec<LinkAction> {
        let Some(incoming) = self.streams.get_mut(stream_id) else {
            return vec![];
        };
        if incoming.cleared || bytes.is_empty() {
            return vec![];
        }
        let mut samples = Vec::with_capacity(bytes.len() / 2 + 1);
        let mut rest = bytes;
        if let Some(low) = incoming.odd_byte.take() {
            samples.push(i16::from_le_bytes([low, rest[0]]));
            rest = &rest[1..];
        }
        let pairs = rest.chunks_exact(2);
        if let [last] = pairs.remainder() {
            incoming.odd_byte = Some(*last);
        }
        samples.extend(pairs.map(|p| i16::from_le_bytes([p[0], p[1]])));
        let pcm = incoming.resampler.push(&samples).concat();
        self.metrics
            .livekit_agent_audio_seconds
            .inc_by(pcm.len() as f64 / f64::from(crate::voice::SAMPLE_RATE));
        if pcm.is_empty() {
            return vec![];
        }
        vec![LinkAction::Audio(AgentAudio::Segment {
            segment: incoming.segment,
            pcm,
        })]
    }

    fn closed(&mut self, stream_id: &str, error: &Option<String>) -> Vec<LinkAction> {
        let Some(mut incoming) = self.streams.remove(stream_id) else {
            return vec![];
        };
        if let Some(error) = error {
            tracing::warn!(%error, "the agent's audio stream broke off; its segment ends here");
        }
        if incoming.cleared {
            return vec![];
        }
        let pcm = incoming.resampler.flush().concat();
        let mut actions = Vec::with_capacity(2);
        if !pcm.is_empty() {
            actions.push(LinkAction::Audio(AgentAudio::Segment {
                segment: incoming.segment,
                pcm,
            }));
        }
        actions.push(LinkAction::Audio(AgentAudio::End {
            segment: incoming.segment,
        }));
        actions
    }

    fn invoked(&mut self, invocation: &RpcInvocation) -> Vec<LinkAction> {
        let (answer, mut actions) = if invocation.method != RPC_CLEAR_BUFFER {
            (
                Err((
                    RpcErrorCode::UnsupportedMethod,
                    format!("no method {}", invocation.method),
                )),
                vec![],
            )
        } else if !self.is_agent(&invocation.caller_identity) {
            tracing::warn!(caller = %invocation.caller_identity, "lk.clear_buffer from someone not the agent");
            (Ok("reject".to_string()), vec![])
        } else {
            for incoming in self.streams.values_mut() {
                incoming.cleared = true;
            }
            (
                Ok("ok".to_string()),
                vec![LinkAction::Audio(AgentAudio::Clear)],
            )
        };
        let outcome = if answer.is_ok() { "ok" } else { "error" };
        self.metrics
            .livekit_rpc
            .with_label_values(&[RPC_CLEAR_BUFFER, "received", outcome])
            .inc();
        // The answer first: the agent waits on it, and the clear needs no more than ordering.
        actions.insert(
            0,
            LinkAction::Answer {
                invocation_id: invocation.invocation_id,
                method: invocation.method.clone(),
                result: answer,
            },
        );
        actions
    }
}

/// The `lk.playback_finished` payload: exactly these keys (the agent rejects any other).
pub fn finished_payload(position_seconds: f64, interrupted: bool) -> String {
    serde_json::json!({
        "playback_position": position_seconds,
        "interrupted": interrupted,
        "synchronized_transcript": null,
    })
    .to_string()
}

/// How long the agent has to answer one notice, and how often a failed one is tried.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(5);
const NOTICE_TRIES: u32 = 5;

/// Tells the agent how its segments play, one notice at a time, in order. `playback_finished` is
/// retried (with backoff) until the agent has it or the room is gone: without it the agent waits.
/// `playback_started` is best effort: an agent that does not listen answers `UNSUPPORTED_METHOD`,
/// and is not asked again.
pub async fn notify_agent(
    room: Arc<AvatarRoom>,
    mut notices: mpsc::UnboundedReceiver<PlaybackNotice>,
    mut agent: watch::Receiver<Option<String>>,
    metrics: Metrics,
) {
    let mut started_unsupported = false;
    while let Some(notice) = notices.recv().await {
        let (method, payload) = match notice {
            PlaybackNotice::Started { .. } if started_unsupported => continue,
            PlaybackNotice::Started { .. } => (RPC_PLAYBACK_STARTED, String::new()),
            PlaybackNotice::Finished {
                position_seconds,
                interrupted,
                ..
            } => (
                RPC_PLAYBACK_FINISHED,
                finished_payload(position_seconds, interrupted),
            ),
        };
        // A segment can only come from a known agent; wait for it all the same.
        let Ok(identity) = agent.wait_for(Option::is_some).await.map(|a| a.clone()) else {
            return;
        };
        let identity = identity.unwrap_or_default();
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 1..=NOTICE_TRIES {
            match room
                .perform_rpc(&identity, method, &payload, NOTICE_TIMEOUT)
                .await
            {
                Ok(_) => {
                    metrics
                        .livekit_rpc
                        .with_label_values(&[method, "sent", "ok"])
                        .inc();
                    break;
                }
                Err(LkError::Rpc { code, message })
                    if code == RpcErrorCode::UnsupportedMethod as u32 =>
                {
                    tracing::debug!(%method, %message, "the agent does not take this notice");
                    metrics
                        .livekit_rpc
                        .with_label_values(&[method, "sent", "unsupported"])
                        .inc();
                    if method == RPC_PLAYBACK_STARTED {
                        started_unsupported = true;
                    }
                    break;
                }
                Err(LkError::Disconnected) => return,
                Err(e) => {
                    metrics
                        .livekit_rpc
                        .with_label_values(&[method, "sent", "error"])
                        .inc();
                    tracing::warn!(%method, attempt, error = %e, "the agent did not take a notice");
                    if attempt == NOTICE_TRIES || method == RPC_PLAYBACK_STARTED {
                        break;
                    }
                    tokio::time::sleep(backoff.after(attempt)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playback_finished_has_exactly_the_agents_keys() {
        let payload: serde_json::Value =
            serde_json::from_str(&finished_payload(1.25, true)).unwrap();
        let object = payload.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "interrupted",
                "playback_position",
                "synchronized_transcript"
            ]
        );
        assert_eq!(payload["playback_position"], 1.25);
        assert_eq!(payload["interrupted"], true);
        assert!(payload["synchronized_transcript"].is_null());
    }

    fn link() -> AgentLink {
        AgentLink::new(Some("agent".into()), Metrics::new())
    }

    fn opened(stream: &str, from: &str, rate: &str, channels: &str) -> RoomEvent {
        RoomEvent::ByteStreamOpened {
            stream_id: stream.into(),
            identity: from.into(),
            topic: AUDIO_STREAM_TOPIC.into(),
            name: "AUDIO_x".into(),
            mime_type: "application/octet-stream".into(),
            attributes: HashMap::from([
                ("sample_rate".to_string(), rate.to_string()),
                ("num_channels".to_string(), channels.to_string()),
            ]),
        }
    }

    fn bytes(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    fn pcm_of(actions: &[LinkAction], segment: u64) -> usize {
        actions
            .iter()
            .map(|a| match a {
                LinkAction::Audio(AgentAudio::Segment { segment: s, pcm }) if *s == segment => {
                    pcm.len()
                }
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn a_segment_is_resampled_whole_whatever_its_cuts_and_ends_once() {
        let mut link = link();
        let open = link.on_event(&opened("s1", "agent", "24000", "2"));
        assert_eq!(
            open,
            vec![LinkAction::Audio(AgentAudio::Segment {
                segment: 1,
                pcm: vec![]
            })]
        );
        // 0.5 s of stereo at 24 kHz, in chunks of an odd number of bytes.
        let raw = bytes(&vec![1000i16; 24_000]);
        let mut total = 0;
        for piece in raw.chunks(15_001) {
            let actions = link.on_event(&RoomEvent::ByteStreamChunk {
                stream_id: "s1".into(),
                bytes: piece.to_vec(),
            });
            total += pcm_of(&actions, 1);
        }
        let end = link.on_event(&RoomEvent::ByteStreamClosed {
            stream_id: "s1".into(),
            error: None,
        });
        total += pcm_of(&end, 1);
        assert_eq!(
            end.last(),
            Some(&LinkAction::Audio(AgentAudio::End { segment: 1 }))
        );
        assert_eq!(total, 8_000, "0.5 s at 16 kHz");
        // Closed once: a second close (or late chunk) says nothing.
        assert!(link
            .on_event(&RoomEvent::ByteStreamClosed {
                stream_id: "s1".into(),
                error: None
            })
            .is_empty());
    }

    #[test]
    fn only_the_agents_streams_in_a_format_it_can_play_are_taken() {
        let mut link = link();
        assert!(link
            .on_event(&opened("x", "someone", "16000", "1"))
            .is_empty());
        assert!(link
            .on_event(&RoomEvent::ByteStreamChunk {
                stream_id: "x".into(),
                bytes: bytes(&[1; 320])
            })
            .is_empty());
        assert!(link
            .on_event(&opened("y", "agent", "sixteen", "1"))
            .is_empty());
        assert!(link
            .on_event(&opened("z", "agent", "16000", "0"))
            .is_empty());
        assert!(link.on_event(&opened("w", "agent", "1", "1")).is_empty());
        // Without `lk.publish_on_behalf`, the first agent-kind participant is the agent.
        let mut open = AgentLink::new(None, Metrics::new());
        open.on_event(&RoomEvent::ParticipantJoined {
            identity: "user".into(),
            agent: false,
        });
        open.on_event(&RoomEvent::ParticipantJoined {
            identity: "bot".into(),
            agent: true,
        });
        open.on_event(&RoomEvent::ParticipantJoined {
            identity: "bot2".into(),
            agent: true,
        });
        assert_eq!(open.agent().borrow().as_deref(), Some("bot"));
        assert_eq!(
            open.on_event(&RoomEvent::ParticipantLeft {
                identity: "bot".into()
            }),
            vec![LinkAction::AgentLeft("bot".into())]
        );
    }

    #[test]
    fn clear_buffer_drops_the_open_stream_and_answers_only_the_agent() {
        let mut link = link();
        link.on_event(&opened("s1", "agent", "16000", "1"));
        let call = |caller: &str, method: &str| {
            RoomEvent::RpcInvocation(RpcInvocation {
                invocation_id: 7,
                method: method.into(),
                caller_identity: caller.into(),
                payload: String::new(),
                response_timeout_ms: 10_000,
            })
        };
        let stranger = link.on_event(&call("someone", RPC_CLEAR_BUFFER));
        assert!(
            matches!(&stranger[..], [LinkAction::Answer { result: Ok(r), .. }] if r == "reject")
        );
        let cleared = link.on_event(&call("agent", RPC_CLEAR_BUFFER));
        assert!(matches!(&cleared[0], LinkAction::Answer { result: Ok(r), .. } if r == "ok"));
        assert_eq!(cleared[1], LinkAction::Audio(AgentAudio::Clear));
        // The rest of the cleared stream is dropped, and its close says nothing more.
        assert!(link
            .on_event(&RoomEvent::ByteStreamChunk {
                stream_id: "s1".into(),
                bytes: bytes(&[5; 640])
            })
            .is_empty());
        assert!(link
            .on_event(&RoomEvent::ByteStreamClosed {
                stream_id: "s1".into(),
                error: None
            })
            .is_empty());
        let other = link.on_event(&call("agent", "lk.something"));
        assert!(matches!(
            &other[..],
            [LinkAction::Answer {
                result: Err((RpcErrorCode::UnsupportedMethod, _)),
                ..
            }]
        ));
    }
}
