//! The conversation's task: fetch a signed URL when the agent needs one, connect, converse until
//! the connection ends, wait with backoff, and again, serving the consumer all the while.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use url::Url;

use super::backlog::{hold, Backlog, MAX_BACKLOG_EVENTS};
use super::protocol::{Action, Outgoing, Protocol};
use super::types::{AuthMethod, Conversation, ElevenLabsConfig, ElevenLabsError, ProviderEvent};
use crate::config::Secret;
use crate::domain::backoff::Backoff;
use crate::voice::SAMPLE_RATE;

/// How long `close()` waits for the task to say goodbye before aborting it.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// The Python SDK's limit; bounds what one frame can make the client allocate.
const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// An error body from the signed-URL endpoint is read up to this much.
const MAX_ERROR_BODY: usize = 64 << 10;

/// What the handle asks of the task.
pub(super) enum Command {
    Send(Outgoing),
    SetPrompt(Option<String>),
    Close,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(super) struct Endpoints {
    /// `{ws_base}/v1/convai/conversation?agent_id=…`
    public: Url,
    /// `{http_base}/v1/convai/conversation/get-signed-url?agent_id=…`
    signed_url: Url,
}

impl Endpoints {
    pub(super) fn new(
        config: &ElevenLabsConfig,
        conversation: &Conversation,
    ) -> Result<Self, ElevenLabsError> {
        let agent_id = conversation.agent_id.trim();
        if agent_id.is_empty() {
            return Err(ElevenLabsError::Config("agent_id must not be empty".into()));
        }
        if conversation.auth == AuthMethod::Signed
            && config.api_key.as_ref().is_none_or(|key| key.is_empty())
        {
            return Err(ElevenLabsError::Config(
                "a signed agent needs the ElevenLabs API key".into(),
            ));
        }
        if config.initial_backoff.is_zero() || config.initial_backoff > config.max_backoff {
            return Err(ElevenLabsError::Config(
                "initial_backoff must be positive and at most max_backoff".into(),
            ));
        }
        if config.event_buffer == 0 || config.connect_timeout.is_zero() {
            return Err(ElevenLabsError::Config(
                "event_buffer and connect_timeout must be positive".into(),
            ));
        }
        Ok(Self {
            public: endpoint(
                "ws_base",
                &config.ws_base,
                &["ws", "wss"],
                "/v1/convai/conversation",
                agent_id,
            )?,
            signed_url: endpoint(
                "http_base",
                &config.http_base,
                &["http", "https"],
                "/v1/convai/conversation/get-signed-url",
                agent_id,
            )?,
        })
    }
}

fn endpoint(
    field: &str,
    base: &str,
    schemes: &[&str],
    path: &str,
    agent_id: &str,
) -> Result<Url, ElevenLabsError> {
    let mut url = Url::parse(base)
        .map_err(|e| ElevenLabsError::Config(format!("{field} is not a URL ({e})")))?;
    if !schemes.contains(&url.scheme()) || url.host_str().is_none() {
        return Err(ElevenLabsError::Config(format!(
            "{field} must be a {} URL with a host",
            schemes.join(" or ")
        )));
    }
    let joined = format!("{}{path}", url.path().trim_end_matches('/'));
    url.set_path(&joined);
    url.query_pairs_mut()
        .clear()
        .append_pair("agent_id", agent_id);
    Ok(url)
}

/// What the task reads but never changes.
struct Ctx {
    config: ElevenLabsConfig,
    endpoints: Endpoints,
    http: reqwest::Client,
    /// The process's TLS settings (`net`), built on the first `wss://` connection.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// The task's ties to the consumer.
struct Io {
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<ProviderEvent>,
    backlog: Backlog,
    /// Text turns waiting for the next conversation.
    held: VecDeque<Outgoing>,
    conversation: Conversation,
}

/// How one connection ended.
enum Flow {
    /// Closed by the consumer, or nobody listens any more.
    Stop,
    Lost {
        reason: String,
        /// It had been up for `max_backoff`: start the backoff over.
        stable: bool,
    },
}

fn lost(reason: impl Into<String>) -> Flow {
    Flow::Lost {
        reason: reason.into(),
        stable: false,
    }
}

/// Starts the conversation's task; it ends when the consumer closes, drops the handle (which
/// aborts it), or drops the events receiver.
pub(super) fn spawn(
    config: ElevenLabsConfig,
    endpoints: Endpoints,
    conversation: Conversation,
    http: reqwest::Client,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<ProviderEvent>,
) -> JoinHandle<()> {
    let max_audio_samples =
        (config.max_backlog_audio.as_millis() as u64 * SAMPLE_RATE as u64 / 1000) as usize;
    let ctx = Ctx {
        config,
        endpoints,
        http,
        tls: None,
    };
    let io = Io {
        commands,
        events,
        backlog: Backlog::new(max_audio_samples, MAX_BACKLOG_EVENTS),
        held: VecDeque::new(),
        conversation,
    };
    tokio::spawn(run(ctx, io))
}

async fn run(mut ctx: Ctx, mut io: Io) {
    let agent_id = io.conversation.agent_id.clone();
    let mut attempt: u32 = 0;
    loop {
        let flow = connect_and_converse(&mut ctx, &mut io).await;
        let (reason, stable) = match flow {
            Flow::Stop => break,
            Flow::Lost { reason, stable } => (reason, stable),
        };
        if stable {
            attempt = 0;
        }
        attempt = attempt.saturating_add(1);
        let retry_in = backoff_delay(
            ctx.config.initial_backoff,
            ctx.config.max_backoff,
            attempt,
            rand::thread_rng().gen::<f64>(),
        );
        tracing::warn!(agent_id = %agent_id, attempt, ?retry_in, %reason, "ElevenLabs conversation down");
        io.backlog.push(ProviderEvent::Disconnected {
            reason,
            retry_in,
            attempt,
        });
        if io.serve(tokio::time::sleep(retry_in)).await.is_none() {
            break;
        }
    }
    tracing::debug!(agent_id = %agent_id, "ElevenLabs conversation task ended");
}

/// The wait before try `attempt` (1-based): `initial · 2^(attempt-1)` capped at `max`, then
/// scaled into its upper half by `jitter` ∈ [0, 1).
fn backoff_delay(initial: Duration, max: Duration, attempt: u32, jitter: f64) -> Duration {
    Backoff::new(initial, max).jittered(attempt, jitter)
}

async fn connect_and_converse(ctx: &mut Ctx, io: &mut Io) -> Flow {
    let timeout = ctx.config.connect_timeout;
    let url = match io.conversation.auth {
        AuthMethod::Public => ctx.endpoints.public.clone(),
        AuthMethod::Signed => {
            let fetch = tokio::time::timeout(timeout, fetch_signed_url(ctx));
            match io.serve(fetch).await {
                None => return Flow::Stop,
                Some(Err(_)) => {
                    return lost(format!("signed URL request timed out after {timeout:?}"))
                }
                Some(Ok(Err(reason))) => return lost(reason),
                Some(Ok(Ok(url))) => url,
            }
        }
    };
    let connector = if url.scheme() == "wss" {
        Connector::Rustls(
            ctx.tls
                .get_or_insert_with(|| Arc::new(crate::net::tls_client_config()))
                .clone(),
        )
    } else {
        Connector::Plain
    };
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    // Nagle off: audio and pongs are small and late is wrong.
    let handshake = tokio::time::timeout(
        timeout,
        tokio_tungstenite::connect_async_tls_with_config(
            url.as_str(),
            Some(ws_config),
            true,
            Some(connector),
        ),
    );
    let ws = match io.serve(handshake).await {
        None => return Flow::Stop,
        Some(Err(_)) => return lost(format!("WebSocket handshake timed out after {timeout:?}")),
        // The error never contains the URL (and so never a signed URL's token).
        Some(Ok(Err(e))) => return lost(format!("WebSocket connection failed: {e}")),
        Some(Ok(Ok((ws, _response)))) => ws,
    };
    io.converse(&ctx.config, ws).await
}

/// `GET …/get-signed-url` with the API key; the `signed_url` it answers, or why not.
async fn fetch_signed_url(ctx: &Ctx) -> Result<Url, String> {
    let key = ctx
        .config
        .api_key
        .as_ref()
        .map(Secret::expose)
        .unwrap_or_default();
    let response = ctx
        .http
        .get(ctx.endpoints.signed_url.clone())
        .header("xi-api-key", key)
        .send()
        .await
        .map_err(|e| format!("signed URL request failed: {}", e.without_url()))?;
    let status = response.status();
    let body = crate::net::read_limited(response, MAX_ERROR_BODY)
        .await
        .map_err(|e| format!("signed URL response unreadable: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "signed URL request refused: HTTP {} ({})",
            status.as_u16(),
            error_detail(&body)
        ));
    }
    let parsed: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("signed URL response is not JSON ({e})"))?;
    let raw = parsed
        .get("signed_url")
        .and_then(Value::as_str)
        .ok_or("signed URL response has no signed_url")?;
    let url = Url::parse(raw).map_err(|e| format!("signed_url is not a URL ({e})"))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err("signed_url is not a ws:// or wss:// URL".into());
    }
    Ok(url)
}

/// ElevenLabs' error bodies: `{"detail": {"status", "message"}}`, `{"detail": "…"}`, or
/// FastAPI's `{"detail": [{"msg", …}]}`.
fn error_detail(body: &[u8]) -> String {
    let text = || {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            "no body".to_string()
        } else {
            text.chars().take(200).collect()
        }
    };
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return text();
    };
    match value.get("detail") {
        Some(Value::String(detail)) => detail.clone(),
        Some(Value::Object(detail)) => {
            let field = |name| detail.get(name).and_then(Value::as_str);
            match (field("status"), field("message")) {
                (Some(status), Some(message)) => format!("{status}: {message}"),
                (Some(one), None) | (None, Some(one)) => one.to_string(),
                (None, None) => text(),
            }
        }
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| item.get("msg").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("; "),
        _ => text(),
    }
}

impl Io {
    /// Serves the consumer (commands, event delivery) while `work` runs; `None` when the
    /// conversation must stop instead.
    async fn serve<F: Future>(&mut self, work: F) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    None | Some(Command::Close) => return None,
                    Some(Command::SetPrompt(prompt)) => self.conversation.prompt = prompt,
                    Some(Command::Send(outgoing)) => hold(&mut self.held, &mut self.backlog, outgoing),
                },
                permit = self.events.reserve(), if !self.backlog.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.backlog.pop() {
                            permit.send(event);
                        }
                    }
                    Err(_) => return None,
                },
                _ = self.events.closed() => return None,
                output = &mut work => return Some(output),
            }
        }
    }

    /// One connection, from the initiation data to its end.
    async fn converse(&mut self, config: &ElevenLabsConfig, ws: Ws) -> Flow {
        let (mut sink, mut stream) = ws.split();
        let init = self.conversation.initiation_message().to_string();
        if let Err(e) = sink.send(Message::text(init)).await {
            return lost(format!(
                "sending conversation_initiation_client_data failed: {e}"
            ));
        }
        let mut protocol = Protocol::new();
        let deadline = Instant::now() + config.connect_timeout;
        let mut up_since: Option<Instant> = None;
        let stable = |up_since: Option<Instant>| {
            up_since.is_some_and(|since| since.elapsed() >= config.max_backoff)
        };
        loop {
            let mut outbound: Vec<String> = Vec::new();
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    None | Some(Command::Close) => {
                        say_goodbye(&mut sink).await;
                        return Flow::Stop;
                    }
                    Some(Command::SetPrompt(prompt)) => self.conversation.prompt = prompt,
                    Some(Command::Send(outgoing)) if up_since.is_some() => {
                        outbound.extend(protocol.encode(&outgoing));
                    }
                    Some(Command::Send(outgoing)) => hold(&mut self.held, &mut self.backlog, outgoing),
                },
                permit = self.events.reserve(), if !self.backlog.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.backlog.pop() {
                            permit.send(event);
                        }
                    }
                    Err(_) => {
                        say_goodbye(&mut sink).await;
                        return Flow::Stop;
                    }
                },
                _ = self.events.closed() => {
                    say_goodbye(&mut sink).await;
                    return Flow::Stop;
                }
                _ = tokio::time::sleep_until(deadline), if up_since.is_none() => {
                    return lost(format!(
                        "no conversation_initiation_metadata within {:?}",
                        config.connect_timeout
                    ));
                }
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        for action in protocol.on_server_message(&text) {
                            match action {
                                Action::Reply(reply) => outbound.push(reply),
                                Action::Emit(event) => {
                                    let connected = matches!(event, ProviderEvent::Connected { .. });
                                    self.backlog.push(event);
                                    if connected && up_since.is_none() {
                                        up_since = Some(Instant::now());
                                        for held in std::mem::take(&mut self.held) {
                                            outbound.extend(protocol.encode(&held));
                                        }
                                    }
                                }
                            }
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Flow::Lost {
                            reason: describe_close(frame.as_ref()),
                            stable: stable(up_since),
                        };
                    }
                    Some(Ok(Message::Binary(bytes))) => {
                        tracing::debug!(len = bytes.len(), "ElevenLabs sent a binary frame; ignored");
                    }
                    // Pings are answered by tungstenite itself.
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        return Flow::Lost {
                            reason: format!("connection lost: {e}"),
                            stable: stable(up_since),
                        };
                    }
                    None => {
                        return Flow::Lost {
                            reason: "connection closed without a close frame".into(),
                            stable: stable(up_since),
                        };
                    }
                },
            }
            for text in outbound {
                if let Err(e) = sink.send(Message::text(text)).await {
                    return Flow::Lost {
                        reason: format!("sending failed: {e}"),
                        stable: stable(up_since),
                    };
                }
            }
        }
    }
}

/// A normal close frame, bounded: a peer that stopped reading must not hold the task.
async fn say_goodbye(sink: &mut SplitSink<Ws, Message>) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE / 2, sink.send(Message::Close(Some(frame)))).await;
}

fn describe_close(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(frame) if frame.reason.is_empty() => {
            format!(
                "ElevenLabs closed the connection ({})",
                u16::from(frame.code)
            )
        }
        Some(frame) => format!(
            "ElevenLabs closed the connection ({}: {})",
            u16::from(frame.code),
            frame.reason.as_str()
        ),
        None => "ElevenLabs closed the connection".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_join_the_bases_and_settings_are_checked() {
        let config = ElevenLabsConfig {
            http_base: "http://127.0.0.1:9/prefix/".into(),
            ws_base: "ws://127.0.0.1:9".into(),
            api_key: Some(Secret::new("k")),
            ..Default::default()
        };
        let conversation = Conversation::new("agent a&b", AuthMethod::Signed);
        let endpoints = Endpoints::new(&config, &conversation).unwrap();
        assert_eq!(
            endpoints.public.as_str(),
            "ws://127.0.0.1:9/v1/convai/conversation?agent_id=agent+a%26b"
        );
        assert_eq!(
            endpoints.signed_url.as_str(),
            "http://127.0.0.1:9/prefix/v1/convai/conversation/get-signed-url?agent_id=agent+a%26b"
        );

        let no_key = ElevenLabsConfig {
            api_key: None,
            ..config.clone()
        };
        assert!(Endpoints::new(&no_key, &conversation).is_err());
        assert!(Endpoints::new(&no_key, &Conversation::new("a", AuthMethod::Public)).is_ok());
        let bad_ws = ElevenLabsConfig {
            ws_base: "https://api.elevenlabs.io".into(),
            ..config.clone()
        };
        assert!(Endpoints::new(&bad_ws, &conversation).is_err());
        assert!(Endpoints::new(&config, &Conversation::new(" ", AuthMethod::Signed)).is_err());
    }

    #[test]
    fn backoff_doubles_to_the_cap_within_its_upper_half() {
        let (initial, max) = (Duration::from_millis(200), Duration::from_secs(10));
        assert_eq!(backoff_delay(initial, max, 1, 0.999_999).as_millis(), 199);
        assert_eq!(
            backoff_delay(initial, max, 1, 0.0),
            Duration::from_millis(100)
        );
        assert_eq!(
            backoff_delay(initial, max, 3, 0.0),
            Duration::from_millis(400)
        );
        assert_eq!(backoff_delay(initial, max, 7, 1.0), max);
        assert_eq!(backoff_delay(initial, max, 500, 0.0), max / 2);
        assert_eq!(backoff_delay(initial, max, 0, 1.0), initial);
    }

    #[test]
    fn error_details_are_read_from_elevenlabs_bodies() {
        assert_eq!(
            error_detail(br#"{"detail":{"status":"invalid_api_key","message":"Invalid API key"}}"#),
            "invalid_api_key: Invalid API key"
        );
        assert_eq!(error_detail(br#"{"detail":"Not Found"}"#), "Not Found");
        assert_eq!(
            error_detail(br#"{"detail":[{"loc":["query","agent_id"],"msg":"field required"}]}"#),
            "field required"
        );
        assert_eq!(error_detail(b"bad gateway"), "bad gateway");
        assert_eq!(error_detail(b""), "no body");
    }
}
