//! The VoiceBridge child: the session's voice. Everything it says goes through one real-time
//! player into the session's audio channel (16 kHz PCM in 20 ms chunks, for the renderer, the
//! preview and the room):
//! - `speak` text, synthesised by the local TTS (espeak-ng) off the actor, played in order;
//!   `interrupt` (or a `speak` with `interrupt: true`) cuts what plays and drops the queue;
//! - with a conversational provider (ElevenLabs), the agent's own turns: its audio events are
//!   queued as they arrive (faster than real time) and played out at real time; an `interruption`
//!   drops what of the turn has not played yet. A `speak` cuts the agent's turn: the words are
//!   said verbatim through the TTS, and the conversation is told they were said.
//!
//! Providers sit behind [`VoiceProvider`]; their events come back to the actor as a stream. The
//! provider's reconnections are its own (with backoff); the session shows them in its status.

use std::collections::VecDeque;

use actix::prelude::*;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

mod player;

use super::messages::{AgentAudio, ChildExited, ChildKind, PlaybackNotice, VoiceEvent};
use crate::domain::events::Speaker;
use crate::voice::elevenlabs::{self, ElevenLabsHandle, ProviderEvent};
use crate::voice::tts::{Speech, TtsCache};
use crate::voice::{PcmChunk, Voiced};
use player::{player, Played, PlayerCommand};

/// Speak `text`; with `interrupt`, first cut what is playing and drop the queue.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Say {
    pub utterance: u64,
    pub text: String,
    pub interrupt: bool,
}

/// Cut the current utterance (or agent turn) and drop the queue.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Interrupt;

/// The session is over: end the conversation and stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Knowledge for the conversation (the session keeps its own copy for status and later turns).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddContext {
    pub text: String,
}

/// The agent's prompt changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetPrompt {
    pub prompt: String,
}

/// The user's speech, 16 kHz mono, from whichever transport hears them (the LiveKit room, the
/// local room's WebRTC viewers): for a provider that listens.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Hear(pub PcmChunk);

/// What the bridge asks of a conversational voice provider.
pub trait VoiceProvider {
    fn name(&self) -> &'static str;
    /// The user's speech (16 kHz mono); a provider without ears ignores it.
    fn hear(&self, pcm: &[i16]) -> Result<(), String>;
    /// Knowledge for the live conversation.
    fn add_context(&self, text: &str) -> Result<(), String>;
    /// The agent's prompt changed: for the next conversation, and told to the live one.
    fn set_prompt(&self, prompt: &str) -> Result<(), String>;
    /// The avatar just said `text` verbatim: the conversation should know.
    fn spoke(&self, text: &str) -> Result<(), String>;
    /// Ends the conversation (politely, in the background).
    fn close(self: Box<Self>);
}

/// The embedded default: no conversation, only `speak` through the local TTS.
pub struct LocalVoice;

impl VoiceProvider for LocalVoice {
    fn name(&self) -> &'static str {
        "local"
    }
    fn hear(&self, _: &[i16]) -> Result<(), String> {
        Ok(())
    }
    fn add_context(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn set_prompt(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn spoke(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn close(self: Box<Self>) {}
}

impl VoiceProvider for ElevenLabsHandle {
    fn name(&self) -> &'static str {
        "elevenlabs"
    }
    fn hear(&self, pcm: &[i16]) -> Result<(), String> {
        self.user_audio(pcm).map_err(|e| e.to_string())
    }
    fn add_context(&self, text: &str) -> Result<(), String> {
        self.contextual_update(text).map_err(|e| e.to_string())
    }
    fn set_prompt(&self, prompt: &str) -> Result<(), String> {
        // The protocol fixes the prompt at initiation: the next conversation gets it, and the
        // live one hears of the change.
        ElevenLabsHandle::set_prompt(self, Some(prompt.to_string())).map_err(|e| e.to_string())?;
        self.contextual_update(format!("Your instructions changed. From now on: {prompt}"))
            .map_err(|e| e.to_string())
    }
    fn spoke(&self, text: &str) -> Result<(), String> {
        self.contextual_update(format!("You just said, word for word: \"{text}\""))
            .map_err(|e| e.to_string())
    }
    fn close(self: Box<Self>) {
        // A close frame, then the task ends (bounded by the client's own grace period).
        actix_web::rt::spawn(ElevenLabsHandle::close(*self));
    }
}

/// The room's own agent is the voice (LiveKit Agents): its speech comes as [`AgentAudio`] from
/// the room, not from a provider; `speak` still goes through the local TTS.
pub struct RoomAgentVoice;

impl VoiceProvider for RoomAgentVoice {
    fn name(&self) -> &'static str {
        "room"
    }
    // The agent hears the user in its own room, and keeps its own context and prompt.
    fn hear(&self, _: &[i16]) -> Result<(), String> {
        Ok(())
    }
    fn add_context(&self, _: &str) -> Result<(), String> {
        Err("the room's agent keeps its own context".into())
    }
    fn set_prompt(&self, _: &str) -> Result<(), String> {
        Err("the room's agent keeps its own instructions".into())
    }
    fn spoke(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn close(self: Box<Self>) {}
}

/// Which provider a bridge starts with.
pub enum ProviderSpec {
    Local,
    ElevenLabs(Box<ElevenLabsSpec>),
    /// The room's agent ([`RoomAgentVoice`]).
    Room,
}

pub struct ElevenLabsSpec {
    pub config: elevenlabs::ElevenLabsConfig,
    pub conversation: elevenlabs::Conversation,
    pub http: reqwest::Client,
}

// ---------------------------------------------------------------------------------------------
// The actor
// ---------------------------------------------------------------------------------------------

struct Pending {
    id: u64,
    text: String,
}

/// A synthesised utterance, back from the TTS task.
#[derive(Message)]
#[rtype(result = "()")]
struct Synthesized {
    id: u64,
    text: String,
    result: Result<Speech, String>,
}

pub struct VoiceBridge {
    espeak_voice: String,
    tts: TtsCache,
    spec: Option<ProviderSpec>,
    provider: Box<dyn VoiceProvider>,
    events: Recipient<VoiceEvent>,
    exited: Recipient<ChildExited>,
    audio: broadcast::Sender<Voiced>,
    player: Option<mpsc::UnboundedSender<PlayerCommand>>,
    player_task: Option<JoinHandle<()>>,
    /// Utterances waiting for synthesis, in order.
    pending: VecDeque<Pending>,
    synthesizing: Option<(u64, JoinHandle<()>)>,
    agent_speaking: bool,
    /// Stopping on purpose: the provider's events ending is no failure then.
    dead: bool,
}

impl VoiceBridge {
    pub fn new(
        espeak_voice: String,
        tts: TtsCache,
        provider: ProviderSpec,
        events: Recipient<VoiceEvent>,
        exited: Recipient<ChildExited>,
        audio: broadcast::Sender<Voiced>,
    ) -> Self {
        Self {
            espeak_voice,
            tts,
            spec: Some(provider),
            provider: Box::new(LocalVoice),
            events,
            exited,
            audio,
            player: None,
            player_task: None,
            pending: VecDeque::new(),
            synthesizing: None,
            agent_speaking: false,
            dead: false,
        }
    }

    fn play(&self, command: PlayerCommand) {
        if let Some(player) = &self.player {
            let _ = player.send(command);
        }
    }

    /// Synthesises the next pending utterance (one at a time, in order; playout runs behind).
    fn synthesize_next(&mut self, ctx: &mut Context<Self>) {
        if self.synthesizing.is_some() {
            return;
        }
        let Some(next) = self.pending.pop_front() else {
            return;
        };
        let me = ctx.address();
        let voice = self.espeak_voice.clone();
        let tts = self.tts.clone();
        let id = next.id;
        let task = actix_web::rt::spawn(async move {
            let result = tts
                .synthesize(&next.text, &voice)
                .await
                .map_err(|e| e.to_string());
            me.do_send(Synthesized {
                id,
                text: next.text,
                result,
            });
        });
        self.synthesizing = Some((id, task));
    }

    fn cut(&mut self) {
        self.pending.clear();
        if let Some((_, task)) = self.synthesizing.take() {
            task.abort();
        }
        self.play(PlayerCommand::CutAll);
        self.events.do_send(VoiceEvent::Cut);
    }

    fn die(&mut self, ctx: &mut Context<Self>, reason: String) {
        if std::mem::replace(&mut self.dead, true) {
            return;
        }
        self.exited.do_send(ChildExited {
            kind: ChildKind::Voice,
            reason,
        });
        ctx.stop();
    }
}

impl Actor for VoiceBridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.player = Some(tx);
        self.player_task = Some(actix_web::rt::spawn(player(
            rx,
            self.audio.clone(),
            ctx.address().recipient(),
        )));
        match self.spec.take() {
            None | Some(ProviderSpec::Local) => {
                self.events.do_send(VoiceEvent::Provider {
                    provider: "local",
                    connected: true,
                    // The local TTS speaks; it has no ears.
                    listening: false,
                    detail: "local text-to-speech".into(),
                });
            }
            Some(ProviderSpec::Room) => {
                self.provider = Box::new(RoomAgentVoice);
                self.events.do_send(VoiceEvent::Provider {
                    provider: "room",
                    connected: true,
                    // The agent listens in its own room, not through this bridge.
                    listening: false,
                    detail: "the room's agent (LiveKit Agents)".into(),
                });
            }
            Some(ProviderSpec::ElevenLabs(spec)) => {
                match elevenlabs::start(spec.config, spec.conversation, spec.http) {
                    Ok((handle, events)) => {
                        self.provider = Box::new(handle);
                        self.events.do_send(VoiceEvent::Provider {
                            provider: "elevenlabs",
                            connected: false,
                            listening: false,
                            detail: "connecting".into(),
                        });
                        ctx.add_stream(futures_util::stream::unfold(events, |mut rx| async move {
                            rx.recv().await.map(|event| (event, rx))
                        }));
                    }
                    Err(e) => self.die(ctx, format!("voice provider could not start: {e}")),
                }
            }
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some((_, task)) = self.synthesizing.take() {
            task.abort();
        }
        if let Some(task) = self.player_task.take() {
            task.abort();
        }
        std::mem::replace(&mut self.provider, Box::new(LocalVoice)).close();
    }
}

impl Handler<Say> for VoiceBridge {
    type Result = ();

    fn handle(&mut self, msg: Say, ctx: &mut Self::Context) {
        if msg.interrupt {
            self.cut();
        }
        // Verbatim words take the floor from the agent's own turn.
        self.play(PlayerCommand::CutAgent);
        self.pending.push_back(Pending {
            id: msg.utterance,
            text: msg.text,
        });
        self.synthesize_next(ctx);
    }
}

impl Handler<Shutdown> for VoiceBridge {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.dead = true;
        ctx.stop();
    }
}

impl Handler<Interrupt> for VoiceBridge {
    type Result = ();

    fn handle(&mut self, _: Interrupt, _: &mut Self::Context) {
        self.cut();
    }
}

impl Handler<AddContext> for VoiceBridge {
    type Result = ();

    fn handle(&mut self, msg: AddContext, _: &mut Self::Context) {
        if let Err(e) = self.provider.add_context(&msg.text) {
            tracing::warn!(provider = self.provider.name(), error = %e, "context not delivered");
        }
    }
}

impl Handler<Hear> for VoiceBridge {
    type Result = ();

    fn handle(&mut self, Hear(pcm): Hear, _: &mut Self::Context) {
        if let Err(e) = self.provider.hear(&pcm) {
            tracing::debug!(provider = self.provider.name(), error = %e, "user audio not delivered");
        }
    }
}

impl Handler<SetPrompt> for VoiceBridge {
    type Result = ();

    fn handle(&mut self, msg: SetPrompt, _: &mut Self::Context) {
        if let Err(e) = self.provider.set_prompt(&msg.prompt) {
            tracing::warn!(provider = self.provider.name(), error = %e, "prompt not delivered");
        }
    }
}

impl Handler<Synthesized> for VoiceBridge {
    type Result = ();

    fn handle(&mut self, msg: Synthesized, ctx: &mut Self::Context) {
        if self.synthesizing.as_ref().map(|(id, _)| *id) != Some(msg.id) {
            return; // cut while it was being made
        }
        self.synthesizing = None;
        match msg.result {
            Ok(speech) => {
                self.play(PlayerCommand::Utterance(msg.id, speech));
                if let Err(e) = self.provider.spoke(&msg.text) {
                    tracing::debug!(error = %e, "provider not told of a speak");
                }
            }
            Err(error) => self.events.do_send(VoiceEvent::SpeechFailed {
                utterance: msg.id,
                error,
            }),
        }
        self.synthesize_next(ctx);
    }
}

impl Handler<Played> for VoiceBridge {
    type Result = ();

    fn handle(&mut self, msg: Played, _: &mut Self::Context) {
        let event = match msg {
            Played::UtteranceStarted(id) => VoiceEvent::SpeechStarted { utterance: id },
            Played::UtteranceEnded { id, interrupted } => VoiceEvent::SpeechEnded {
                utterance: id,
                interrupted,
            },
            Played::AgentEnded { interrupted } => {
                self.agent_speaking = false;
                VoiceEvent::AgentSpeech {
                    speaking: false,
                    interrupted,
                }
            }
            Played::StreamStarted(segment) => {
                self.events.do_send(VoiceEvent::AgentSpeech {
                    speaking: true,
                    interrupted: false,
                });
                VoiceEvent::AgentPlayback(PlaybackNotice::Started { segment })
            }
            Played::StreamEnded {
                segment,
                played_samples,
                interrupted,
            } => {
                if played_samples > 0 {
                    self.events.do_send(VoiceEvent::AgentSpeech {
                        speaking: false,
                        interrupted,
                    });
                }
                VoiceEvent::AgentPlayback(PlaybackNotice::Finished {
                    segment,
                    position_seconds: played_samples as f64 / crate::voice::SAMPLE_RATE as f64,
                    interrupted,
                })
            }
        };
        self.events.do_send(event);
    }
}

impl Handler<AgentAudio> for VoiceBridge {
    type Result = ();

    fn handle(&mut self, audio: AgentAudio, _: &mut Self::Context) {
        match audio {
            AgentAudio::Segment { segment, pcm } => self.play(PlayerCommand::Stream {
                segment,
                samples: pcm,
            }),
            AgentAudio::End { segment } => self.play(PlayerCommand::StreamEnd { segment }),
            AgentAudio::Clear => {
                self.play(PlayerCommand::CutAgent);
                // The room's queue too: the agent's last words stop within one audio frame.
                self.events.do_send(VoiceEvent::Cut);
            }
        }
    }
}

impl StreamHandler<ProviderEvent> for VoiceBridge {
    fn handle(&mut self, event: ProviderEvent, _: &mut Self::Context) {
        match event {
            ProviderEvent::Connected { conversation_id } => {
                self.events.do_send(VoiceEvent::Provider {
                    provider: "elevenlabs",
                    connected: true,
                    listening: true,
                    detail: format!("conversation {conversation_id}"),
                })
            }
            ProviderEvent::Disconnected {
                reason,
                retry_in,
                attempt,
            } => self.events.do_send(VoiceEvent::Provider {
                provider: "elevenlabs",
                connected: false,
                listening: false,
                detail: format!(
                    "{reason}; reconnecting in {} ms (attempt {attempt})",
                    retry_in.as_millis()
                ),
            }),
            ProviderEvent::Audio { pcm, said, .. } => {
                if !self.agent_speaking {
                    self.agent_speaking = true;
                    self.events.do_send(VoiceEvent::AgentSpeech {
                        speaking: true,
                        interrupted: false,
                    });
                }
                self.play(PlayerCommand::Agent(pcm, said));
            }
            ProviderEvent::Interrupted { .. } => {
                self.play(PlayerCommand::CutAgent);
                self.events.do_send(VoiceEvent::Cut);
            }
            ProviderEvent::AgentResponse(text) => self.events.do_send(VoiceEvent::Transcript {
                speaker: Speaker::Agent,
                text,
            }),
            ProviderEvent::AgentResponseCorrection { corrected, .. } => {
                self.events.do_send(VoiceEvent::Transcript {
                    speaker: Speaker::Agent,
                    text: corrected,
                })
            }
            ProviderEvent::UserTranscript(text) => self.events.do_send(VoiceEvent::Transcript {
                speaker: Speaker::User,
                text,
            }),
            ProviderEvent::Dropped { .. } => {
                tracing::warn!("voice provider events dropped for a slow bridge")
            }
            ProviderEvent::Error(error) => tracing::warn!(%error, "voice provider error"),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The provider's task ended on its own: this bridge can say no more.
        self.die(ctx, "the voice provider's connection task ended".into());
    }
}
