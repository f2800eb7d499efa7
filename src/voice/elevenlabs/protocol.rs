//! The protocol of one connection, without I/O: server messages in, events and replies out, and
//! the client events for what the consumer asked. The connection task feeds it text frames and
//! does what it says; the tests feed it recorded messages.

use base64::Engine as _;
use serde_json::{json, Value};

use super::alignment;
use super::audio::{AudioFormat, Decoder, Encoder};
use super::types::ProviderEvent;
use crate::voice::SAMPLE_RATE;

/// A client event the consumer asked for.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outgoing {
    ContextualUpdate(String),
    UserMessage(String),
    UserActivity,
    UserAudio(Vec<i16>),
}

/// What a server message asks of the task.
#[derive(Debug, PartialEq)]
pub(super) enum Action {
    Emit(ProviderEvent),
    /// A client event to send now (pong, tool result).
    Reply(String),
}

/// One connection's protocol state: the conversation id, the audio formats, the interruption.
pub(super) struct Protocol {
    conversation_id: Option<String>,
    output: Decoder,
    input: Encoder,
    /// Audio at or below this event id belongs to an interrupted turn.
    last_interrupt: u64,
}

impl Protocol {
    pub(super) fn new() -> Self {
        Self {
            conversation_id: None,
            // What ElevenLabs uses unless the agent says otherwise; replaced by the metadata.
            output: Decoder::new(AudioFormat::Pcm(SAMPLE_RATE)),
            input: Encoder::new(AudioFormat::Pcm(SAMPLE_RATE)),
            last_interrupt: 0,
        }
    }

    /// A client event for what the consumer asked.
    pub(super) fn encode(&mut self, outgoing: &Outgoing) -> Option<String> {
        let message = match outgoing {
            Outgoing::ContextualUpdate(text) => json!({"type": "contextual_update", "text": text}),
            Outgoing::UserMessage(text) => json!({"type": "user_message", "text": text}),
            Outgoing::UserActivity => json!({"type": "user_activity"}),
            Outgoing::UserAudio(pcm) => {
                let bytes = self.input.encode(pcm)?;
                if bytes.is_empty() {
                    return None;
                }
                // The one client event without a `type`: that is the wire format.
                json!({"user_audio_chunk": base64::engine::general_purpose::STANDARD.encode(bytes)})
            }
        };
        Some(message.to_string())
    }

    pub(super) fn on_server_message(&mut self, text: &str) -> Vec<Action> {
        let message: Value = match serde_json::from_str(text) {
            Ok(message) => message,
            Err(e) => {
                return vec![Action::Emit(ProviderEvent::Error(format!(
                    "ElevenLabs sent a message that is not JSON ({e})"
                )))]
            }
        };
        let kind = message.get("type").and_then(Value::as_str).unwrap_or("");
        match self.handle(kind, &message) {
            Ok(actions) => actions,
            Err(what) => vec![Action::Emit(ProviderEvent::Error(format!(
                "malformed {kind} event from ElevenLabs: {what}"
            )))],
        }
    }

    fn handle(&mut self, kind: &str, message: &Value) -> Result<Vec<Action>, String> {
        let event = |field: &str| message.get(field).ok_or(format!("no {field}"));
        let emit = |event| Ok(vec![Action::Emit(event)]);
        match kind {
            "conversation_initiation_metadata" => {
                let event = event("conversation_initiation_metadata_event")?;
                let id = string_at(event, "conversation_id")?;
                if self.conversation_id.is_some() {
                    tracing::debug!("second conversation_initiation_metadata ignored");
                    return Ok(vec![]);
                }
                self.conversation_id = Some(id.clone());
                let mut actions = vec![Action::Emit(ProviderEvent::Connected {
                    conversation_id: id,
                })];
                let format_of = |field| event.get(field).and_then(Value::as_str);
                if let Some(name) = format_of("agent_output_audio_format") {
                    match AudioFormat::parse(name) {
                        Some(format) => self.output = Decoder::new(format),
                        None => {
                            self.output = Decoder::unsupported();
                            actions.push(Action::Emit(ProviderEvent::Error(format!(
                                "unsupported agent_output_audio_format {name:?}: \
                                 this conversation's audio is dropped"
                            ))));
                        }
                    }
                }
                if let Some(name) = format_of("user_input_audio_format") {
                    match AudioFormat::parse(name) {
                        Some(format) => self.input = Encoder::new(format),
                        None => {
                            self.input = Encoder::unsupported();
                            actions.push(Action::Emit(ProviderEvent::Error(format!(
                                "unsupported user_input_audio_format {name:?}: \
                                 user audio is not sent"
                            ))));
                        }
                    }
                }
                Ok(actions)
            }
            "audio" => {
                let event = event("audio_event")?;
                let event_id = event_id_at(event)?;
                if event_id <= self.last_interrupt {
                    tracing::trace!(event_id, "audio of an interrupted turn dropped");
                    return Ok(vec![]);
                }
                let encoded = string_at(event, "audio_base_64")?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded.as_bytes())
                    .map_err(|e| format!("audio_base_64 is not base64 ({e})"))?;
                let pcm = match self.output.decode(&bytes) {
                    Some(pcm) if !pcm.is_empty() => pcm,
                    // Unsupported format (reported once), or too short to yield a sample yet.
                    _ => return Ok(vec![]),
                };
                // A malformed alignment costs the lips their timeline, never the audio.
                let (said, error) = match event.get("alignment") {
                    None | Some(Value::Null) => (None, None),
                    Some(alignment) => match alignment::timeline(alignment, pcm.len()) {
                        Ok(said) => (said, None),
                        Err(what) => (None, Some(what)),
                    },
                };
                let mut actions = vec![Action::Emit(ProviderEvent::Audio {
                    event_id,
                    pcm,
                    said,
                })];
                if let Some(what) = error {
                    actions.push(Action::Emit(ProviderEvent::Error(format!(
                        "malformed audio event from ElevenLabs: audio_event.{what}; \
                         its audio plays, the mouth follows the sound"
                    ))));
                }
                Ok(actions)
            }
            "interruption" => {
                let event_id = event_id_at(event("interruption_event")?)?;
                self.last_interrupt = self.last_interrupt.max(event_id);
                // The next turn is a new stream: no interpolation across the cut.
                self.output.reset();
                emit(ProviderEvent::Interrupted { event_id })
            }
            "ping" => {
                let event_id = event_id_at(event("ping_event")?)?;
                Ok(vec![Action::Reply(
                    json!({"type": "pong", "event_id": event_id}).to_string(),
                )])
            }
            "agent_response" => {
                let text = string_at(event("agent_response_event")?, "agent_response")?;
                emit(ProviderEvent::AgentResponse(text.trim().to_string()))
            }
            "agent_response_correction" => {
                let event = event("agent_response_correction_event")?;
                emit(ProviderEvent::AgentResponseCorrection {
                    original: string_at(event, "original_agent_response")?
                        .trim()
                        .to_string(),
                    corrected: string_at(event, "corrected_agent_response")?
                        .trim()
                        .to_string(),
                })
            }
            "user_transcript" => {
                let text = string_at(event("user_transcription_event")?, "user_transcript")?;
                emit(ProviderEvent::UserTranscript(text.trim().to_string()))
            }
            "client_tool_call" => {
                let call = event("client_tool_call")?;
                let id = string_at(call, "tool_call_id")?;
                let name = call.get("tool_name").and_then(Value::as_str).unwrap_or("?");
                tracing::debug!(tool = name, "client tool call refused: no client tools");
                Ok(vec![Action::Reply(
                    json!({
                        "type": "client_tool_result",
                        "tool_call_id": id,
                        "result": format!("Client tool {name} is not available"),
                        "is_error": true,
                    })
                    .to_string(),
                )])
            }
            other => {
                // vad_score, internal_tentative_agent_response, agent_tool_response, and
                // whatever ElevenLabs adds next.
                tracing::debug!(kind = other, "ElevenLabs event ignored");
                Ok(vec![])
            }
        }
    }
}

fn string_at(event: &Value, field: &str) -> Result<String, String> {
    event
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or(format!("no string {field}"))
}

/// Event ids are integers; tolerate them as numeric strings too.
fn event_id_at(event: &Value) -> Result<u64, String> {
    let value = event.get("event_id").ok_or("no event_id")?;
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
        .ok_or(format!("event_id {value} is not a non-negative integer"))
}
#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(output: &str) -> String {
        json!({
            "type": "conversation_initiation_metadata",
            "conversation_initiation_metadata_event": {
                "conversation_id": "conv_1",
                "agent_output_audio_format": output,
                "user_input_audio_format": "pcm_16000",
            }
        })
        .to_string()
    }

    fn audio_message(event_id: Value, samples: &[i16]) -> String {
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        json!({"type": "audio", "audio_event": {
            "audio_base_64": base64::engine::general_purpose::STANDARD.encode(bytes),
            "event_id": event_id,
        }})
        .to_string()
    }

    #[test]
    fn protocol_drops_interrupted_audio_and_answers_pings() {
        let mut protocol = Protocol::new();
        assert_eq!(
            protocol.on_server_message(&metadata("pcm_16000")),
            vec![Action::Emit(ProviderEvent::Connected {
                conversation_id: "conv_1".into()
            })]
        );
        assert_eq!(
            protocol.on_server_message(&audio_message(json!(1), &[1, -2, 3])),
            vec![Action::Emit(ProviderEvent::Audio {
                event_id: 1,
                pcm: vec![1, -2, 3],
                said: None,
            })]
        );
        let interruption = json!({"type": "interruption", "interruption_event": {"event_id": 2}});
        assert_eq!(
            protocol.on_server_message(&interruption.to_string()),
            vec![Action::Emit(ProviderEvent::Interrupted { event_id: 2 })]
        );
        assert!(protocol
            .on_server_message(&audio_message(json!("2"), &[7]))
            .is_empty());
        assert_eq!(
            protocol
                .on_server_message(&audio_message(json!(3), &[9]))
                .len(),
            1
        );
        let ping = json!({"type": "ping", "ping_event": {"event_id": 5, "ping_ms": null}});
        let pong = protocol.on_server_message(&ping.to_string());
        let [Action::Reply(pong)] = &pong[..] else {
            panic!("{pong:?}")
        };
        assert_eq!(
            serde_json::from_str::<Value>(pong).unwrap(),
            json!({"type": "pong", "event_id": 5})
        );
        for ignored in [
            json!({"type": "vad_score", "vad_score_event": {"vad_score": 0.9}}),
            json!({"type": "internal_tentative_agent_response"}),
            json!({"type": "something_new", "x": 1}),
        ] {
            assert!(protocol.on_server_message(&ignored.to_string()).is_empty());
        }
        let malformed = protocol.on_server_message(r#"{"type":"audio","audio_event":{}}"#);
        assert!(
            matches!(&malformed[..], [Action::Emit(ProviderEvent::Error(e))] if e.contains("event_id")),
            "{malformed:?}"
        );
        let tool = json!({"type": "client_tool_call", "client_tool_call": {
            "tool_name": "open_door", "tool_call_id": "t1", "parameters": {}}});
        let reply = protocol.on_server_message(&tool.to_string());
        let [Action::Reply(reply)] = &reply[..] else {
            panic!("{reply:?}")
        };
        let reply: Value = serde_json::from_str(reply).unwrap();
        assert_eq!(reply["type"], "client_tool_result");
        assert_eq!(reply["tool_call_id"], "t1");
        assert_eq!(reply["is_error"], true);
    }

    #[test]
    fn aligned_audio_carries_its_phonemes_and_a_bad_alignment_only_costs_them() {
        let mut protocol = Protocol::new();
        protocol.on_server_message(&metadata("pcm_16000"));
        let mut message: Value =
            serde_json::from_str(&audio_message(json!(1), &[0; 3200])).unwrap();
        message["audio_event"]["alignment"] = json!({
            "chars": ["m", "a"],
            "char_start_times_ms": [0, 100],
            "char_durations_ms": [100, 100],
        });
        let actions = protocol.on_server_message(&message.to_string());
        let [Action::Emit(ProviderEvent::Audio {
            said: Some(said),
            pcm,
            ..
        })] = &actions[..]
        else {
            panic!("{actions:?}")
        };
        assert_eq!(pcm.len(), 3200);
        let said: Vec<(usize, &str)> = said.iter().map(|p| (p.at, &*p.ipa)).collect();
        assert_eq!(said, [(0, "m"), (1600, "a")]);

        message["audio_event"]["event_id"] = json!(2);
        message["audio_event"]["alignment"]["char_durations_ms"] = json!([100]);
        let actions = protocol.on_server_message(&message.to_string());
        let [Action::Emit(ProviderEvent::Audio { said: None, .. }), Action::Emit(ProviderEvent::Error(e))] =
            &actions[..]
        else {
            panic!("{actions:?}")
        };
        assert!(e.contains("audio_event.alignment.char_durations_ms"), "{e}");
    }

    #[test]
    fn protocol_reports_an_unsupported_format_once_and_drops_its_audio() {
        let mut protocol = Protocol::new();
        let actions = protocol.on_server_message(&metadata("mp3_44100_128"));
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(matches!(&actions[1], Action::Emit(ProviderEvent::Error(e)) if e.contains("mp3")));
        assert!(protocol
            .on_server_message(&audio_message(json!(1), &[1, 2]))
            .is_empty());
    }
}
