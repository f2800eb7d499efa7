//! The control channel's frames (API.md, "WebSocket control channel"): parsing and validation of
//! what clients send, and the shapes of what the server sends. This is the one place a session's
//! typed events become wire JSON.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::domain::events::{SessionEvent, SessionStatus, SpeechSource};

/// Largest text frame a client may send.
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// Longest `text` of a speak or add_context.
pub const MAX_TEXT_CHARS: usize = 5_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Speak {
        id: Option<String>,
        text: String,
        interrupt: bool,
    },
    AddContext {
        id: Option<String>,
        text: String,
    },
    Interrupt {
        id: Option<String>,
    },
    Stop {
        id: Option<String>,
    },
    Ping {
        id: Option<String>,
    },
}

impl Command {
    /// The frame's `type` (the metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Speak { .. } => "speak",
            Command::AddContext { .. } => "add_context",
            Command::Interrupt { .. } => "interrupt",
            Command::Stop { .. } => "stop",
            Command::Ping { .. } => "ping",
        }
    }

    pub fn id(&self) -> Option<&str> {
        match self {
            Command::Speak { id, .. }
            | Command::AddContext { id, .. }
            | Command::Interrupt { id }
            | Command::Stop { id }
            | Command::Ping { id } => id.as_deref(),
        }
    }
}

/// Why a frame was refused: sent back as an `error` frame, and the connection stays up.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub code: &'static str,
    pub message: String,
    pub id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeakFrame {
    #[serde(rename = "type")]
    _type: String,
    id: Option<IdValue>,
    text: String,
    interrupt: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextFrame {
    #[serde(rename = "type")]
    _type: String,
    id: Option<IdValue>,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BareFrame {
    #[serde(rename = "type")]
    _type: String,
    id: Option<IdValue>,
}

/// Clients send ids as strings or numbers; they come back as they were given (as text).
#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Text(String),
    Number(serde_json::Number),
}

impl IdValue {
    fn into_string(self) -> String {
        match self {
            IdValue::Text(s) => s,
            IdValue::Number(n) => n.to_string(),
        }
    }
}

fn error(code: &'static str, message: impl Into<String>, id: Option<String>) -> FrameError {
    FrameError {
        code,
        message: message.into(),
        id,
    }
}

fn typed<T: serde::de::DeserializeOwned>(
    value: Value,
    id: Option<String>,
) -> Result<T, FrameError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let message = if path == "." {
            format!("Invalid frame: {inner}")
        } else {
            format!("Invalid value at .{path}: {inner}")
        };
        error("invalid_frame", message, id.clone())
    })
}

fn checked_text(text: String, id: &Option<String>) -> Result<String, FrameError> {
    if text.trim().is_empty() {
        return Err(error(
            "invalid_frame",
            "Invalid value at .text: must not be empty",
            id.clone(),
        ));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(error(
            "invalid_frame",
            format!("Invalid value at .text: must be at most {MAX_TEXT_CHARS} characters"),
            id.clone(),
        ));
    }
    Ok(text)
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Command, FrameError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(error(
            "frame_too_large",
            format!("Frames are limited to {MAX_FRAME_BYTES} bytes."),
            None,
        ));
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| error("invalid_json", format!("Not JSON: {e}"), None))?;
    let Some(object) = value.as_object() else {
        return Err(error(
            "invalid_frame",
            "A frame must be a JSON object with a `type`.",
            None,
        ));
    };
    let id = match object.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => {
            return Err(error(
                "invalid_frame",
                "Invalid value at .id: must be a string or a number",
                None,
            ))
        }
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => {
            return Err(error(
                "invalid_frame",
                "Invalid value at .type: must be a string",
                id,
            ))
        }
        None => return Err(error("invalid_frame", "Missing field `type`.", id)),
    };
    let id_of = |v: Option<IdValue>| v.map(IdValue::into_string);
    match kind.as_str() {
        "speak" => {
            let f: SpeakFrame = typed(value, id.clone())?;
            Ok(Command::Speak { text: checked_text(f.text, &id)?, id: id_of(f.id), interrupt: f.interrupt.unwrap_or(false) })
        }
        "add_context" => {
            let f: TextFrame = typed(value, id.clone())?;
            Ok(Command::AddContext { text: checked_text(f.text, &id)?, id: id_of(f.id) })
        }
        "interrupt" => Ok(Command::Interrupt { id: id_of(typed::<BareFrame>(value, id)?.id) }),
        "stop" => Ok(Command::Stop { id: id_of(typed::<BareFrame>(value, id)?.id) }),
        "ping" => Ok(Command::Ping { id: id_of(typed::<BareFrame>(value, id)?.id) }),
        other => Err(error(
            "unknown_type",
            format!("Unknown frame type `{other}`; expected speak, add_context, interrupt, stop or ping."),
            id,
        )),
    }
}

pub fn ack(id: Option<&str>, delivered_to: usize) -> Value {
    json!({"type": "ack", "id": id, "delivered_to": delivered_to})
}

pub fn pong(id: Option<&str>) -> Value {
    json!({"type": "pong", "id": id})
}

pub fn error_frame(e: &FrameError) -> Value {
    json!({"type": "error", "id": e.id, "code": e.code, "message": e.message})
}

/// The `status` frame: the one shape of a session's status on the wire.
pub fn status_frame(s: &SessionStatus) -> Value {
    use crate::domain::session::ChildKind;
    json!({
        "type": "status",
        "session_id": s.session_id,
        "agent_id": s.agent_id,
        "room_name": s.room_name,
        "state": s.state.as_str(),
        "speaking": s.speaking,
        "users": s.users,
        "clients": s.clients,
        "viewers": s.viewers,
        "billed_seconds": s.billed_seconds,
        "room_restarts": s.restarts_of(ChildKind::Room),
        "renderer_restarts": s.restarts_of(ChildKind::Renderer),
        "voice_restarts": s.restarts_of(ChildKind::Voice),
        "video": s.video.as_ref().map(|v| json!({
            "width": v.width,
            "height": v.height,
            "mouth_region": v.mouth_region,
            "fps": v.fps,
            "device": v.device,
        })),
        "voice": s.voice.as_ref().map(|v| json!({
            "provider": v.provider,
            "connected": v.connected,
            "listening": v.listening,
            "detail": v.detail,
        })),
        "room": s.room.as_ref().map(|r| json!({
            "joined": r.joined,
            "published": r.published,
            "participants": r.participants,
        })),
        "end_reason": s.end_reason,
    })
}

/// A session event as the frame channel clients receive.
pub fn event_frame(event: &SessionEvent) -> Value {
    let kind = event.kind();
    match event {
        SessionEvent::Status(status) => status_frame(status),
        SessionEvent::SpeechStarted {
            session_id,
            source,
            text,
        } => {
            let mut frame = json!({"type": kind, "session_id": session_id});
            if let Some(text) = text {
                frame["text"] = json!(text);
            }
            speech_source(&mut frame, source);
            frame
        }
        SessionEvent::SpeechEnded {
            session_id,
            source,
            interrupted,
        } => {
            let mut frame =
                json!({"type": kind, "session_id": session_id, "interrupted": interrupted});
            speech_source(&mut frame, source);
            frame
        }
        SessionEvent::SpeechFailed {
            session_id,
            utterance,
            message,
        } => json!({
            "type": "error",
            "session_id": session_id,
            "utterance_id": utterance,
            "code": "speech_failed",
            "message": message,
        }),
        SessionEvent::ContextAdded {
            session_id,
            text,
            entries,
        } => json!({"type": kind, "session_id": session_id, "text": text, "entries": entries}),
        SessionEvent::Transcript {
            session_id,
            speaker,
            text,
        } => {
            json!({"type": kind, "session_id": session_id, "role": speaker.as_str(), "text": text})
        }
        SessionEvent::MinutesLow {
            session_id,
            seconds_remaining,
        } => {
            json!({"type": kind, "session_id": session_id, "seconds_remaining": seconds_remaining})
        }
        SessionEvent::ChildRestarted {
            session_id,
            restarts,
            reason,
            ..
        } => {
            json!({"type": kind, "session_id": session_id, "restarts": restarts, "reason": reason})
        }
    }
}

fn speech_source(frame: &mut Value, source: &SpeechSource) {
    match source {
        SpeechSource::Speak { utterance } => {
            frame["source"] = json!("speak");
            frame["utterance_id"] = json!(utterance);
        }
        SpeechSource::Agent => frame["source"] = json!("agent"),
    }
}

/// The preview channel's binary messages: a tag byte, then the payload.
pub const VIDEO: u8 = 0x01;
pub const AUDIO: u8 = 0x02;

/// A frame as the preview sends it: `0x01` + the JPEG.
pub fn video_message(jpeg: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(jpeg.len() + 1);
    message.push(VIDEO);
    message.extend_from_slice(jpeg);
    message
}

/// A chunk of speech as the preview sends it: `0x02` + s16le samples.
pub fn audio_message(chunk: &[i16]) -> Vec<u8> {
    let mut message = Vec::with_capacity(chunk.len() * 2 + 1);
    message.push(AUDIO);
    for s in chunk {
        message.extend_from_slice(&s.to_le_bytes());
    }
    message
}

/// What a preview says first: the session and the shapes of its media.
pub fn hello(
    session_id: &str,
    streams: &crate::actors::session::messages::MediaStreams,
) -> serde_json::Value {
    let video = streams.video.as_ref().map(|v| {
        json!({"width": v.width, "height": v.height, "mouth_region": v.mouth_region, "fps": v.fps, "device": v.device})
    });
    json!({
        "type": "preview",
        "session_id": session_id,
        "video": video,
        "audio": {"sample_rate": crate::voice::SAMPLE_RATE, "channels": 1, "format": "s16le"},
        "binary": {"0x01": "jpeg frame", "0x02": "pcm chunk"},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        assert_eq!(
            parse(r#"{"type":"speak","id":"a1","text":"Hello","interrupt":true}"#).unwrap(),
            Command::Speak {
                id: Some("a1".into()),
                text: "Hello".into(),
                interrupt: true
            }
        );
        assert_eq!(
            parse(r#"{"type":"add_context","id":7,"text":"VIP"}"#).unwrap(),
            Command::AddContext {
                id: Some("7".into()),
                text: "VIP".into()
            }
        );
        assert_eq!(
            parse(r#"{"type":"interrupt"}"#).unwrap(),
            Command::Interrupt { id: None }
        );
        assert_eq!(
            parse(r#"{"type":"stop","id":"s"}"#).unwrap(),
            Command::Stop {
                id: Some("s".into())
            }
        );
        assert_eq!(
            parse(r#"{"type":"ping"}"#).unwrap(),
            Command::Ping { id: None }
        );
    }

    #[test]
    fn refuses_bad_frames_with_a_reason() {
        assert_eq!(parse("not json").unwrap_err().code, "invalid_json");
        assert_eq!(parse("[1]").unwrap_err().code, "invalid_frame");
        assert_eq!(
            parse(r#"{"text":"x"}"#).unwrap_err().message,
            "Missing field `type`."
        );
        let e = parse(r#"{"type":"dance","id":"d"}"#).unwrap_err();
        assert_eq!((e.code, e.id.as_deref()), ("unknown_type", Some("d")));
        let e = parse(r#"{"type":"speak","id":"x"}"#).unwrap_err();
        assert!(e.message.contains("missing field `text`"), "{}", e.message);
        assert_eq!(e.id.as_deref(), Some("x"));
        let e = parse(r#"{"type":"speak","text":5}"#).unwrap_err();
        assert!(
            e.message.starts_with("Invalid value at .text"),
            "{}",
            e.message
        );
        let e = parse(r#"{"type":"speak","text":"hi","interrupt":"yes"}"#).unwrap_err();
        assert!(e.message.contains(".interrupt"), "{}", e.message);
        assert!(parse(r#"{"type":"speak","text":"  "}"#)
            .unwrap_err()
            .message
            .contains("must not be empty"));
        assert_eq!(
            parse(&format!(
                r#"{{"type":"speak","text":"{}"}}"#,
                "a".repeat(MAX_FRAME_BYTES)
            ))
            .unwrap_err()
            .code,
            "frame_too_large"
        );
        assert!(parse(r#"{"type":"ping","extra":1}"#)
            .unwrap_err()
            .message
            .contains("unknown field"));
        assert!(parse(r#"{"type":"ping","id":[1]}"#)
            .unwrap_err()
            .message
            .contains(".id"));
    }
}
