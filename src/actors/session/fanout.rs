//! The session's channel clients: subscribers get its status on connect and on every change, and
//! every event as it happens, each event built once and shared. A subscriber whose bounded channel
//! is full (a slow reader) or gone is dropped at once, so it can neither slow the session nor grow
//! without bound.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::mpsc::error::TrySendError;

use super::messages::*;
use super::{Session, Subscriber};
use crate::domain::events::{SessionStatus, SpeechSource};

impl Session {
    pub(super) fn status(&self) -> SessionStatus {
        SessionStatus {
            session_id: self.row.id.clone(),
            agent_id: self.row.agent_id.clone(),
            room_name: self.row.room_name.clone(),
            state: self.state,
            speaking: self.speech.speaking.is_some(),
            users: self.presence.users.len(),
            clients: self.presence.clients,
            viewers: self.presence.viewers,
            billed_seconds: self.live_seconds(),
            restarts: self.children.restarts,
            video: self.media.video.clone(),
            voice: self.speech.voice_status.clone(),
            room: self.presence.room.clone(),
            end_reason: self
                .outcome
                .as_ref()
                .and_then(|_| self.row.end_reason.clone()),
        }
    }

    /// Sends an event to every subscriber, dropping those that cannot take it.
    pub(super) fn emit(&mut self, event: SessionEvent) {
        if self.subscribers.is_empty() {
            return;
        }
        let event = Arc::new(event);
        let mut dropped_owners = 0;
        let metrics = self.deps.metrics.clone();
        self.subscribers.retain(
            |s| match s.sender.try_send(Outbound::Event(event.clone())) {
                Ok(()) => true,
                Err(e) => {
                    if matches!(e, TrySendError::Full(_)) {
                        metrics.ws_evictions.inc();
                    }
                    dropped_owners += s.owns as usize;
                    false
                }
            },
        );
        if dropped_owners > 0 {
            self.presence.clients = self.presence.clients.saturating_sub(dropped_owners);
        }
    }

    pub(super) fn broadcast_status(&mut self) {
        let status = self.status();
        self.emit(SessionEvent::Status(Box::new(status)));
    }

    /// The session is over: per-session channels close (agent channels stay with their other
    /// sessions).
    pub(super) fn close_subscribers(&mut self) {
        for s in self.subscribers.drain(..).filter(|s| s.owns) {
            let _ = s.sender.try_send(Outbound::Close);
        }
    }
}

impl Handler<Subscribe> for Session {
    type Result = Result<(), SessionError>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Self::Context) -> Self::Result {
        if self.ending || self.state.is_terminal() {
            return Err(SessionError::NotLive(self.state.as_str()));
        }
        let status = SessionEvent::Status(Box::new(self.status()));
        let _ = msg.sender.try_send(Outbound::Event(Arc::new(status)));
        if msg.owns {
            self.presence.clients += 1;
            self.disarm_idle_timer(ctx);
        }
        self.subscribers.push(Subscriber {
            id: msg.subscriber,
            sender: msg.sender,
            owns: msg.owns,
        });
        Ok(())
    }
}

impl Handler<Unsubscribe> for Session {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Self::Context) {
        let mut owned = 0;
        self.subscribers.retain(|s| {
            let keep = s.id != msg.subscriber;
            owned += (!keep && s.owns) as usize;
            keep
        });
        if owned > 0 {
            self.presence.clients = self.presence.clients.saturating_sub(owned);
            self.someone_left(ctx);
        }
    }
}

impl Handler<VoiceEvent> for Session {
    type Result = ();

    fn handle(&mut self, event: VoiceEvent, _: &mut Self::Context) {
        self.deps.metrics.actor_message("session", "voice_event");
        let session_id = self.row.id.clone();
        let event = match event {
            VoiceEvent::SpeechStarted { utterance } => {
                self.speech.speaking = Some(utterance);
                let words = self.speech.words.get(&utterance);
                if let Some((_, asked)) = words {
                    self.deps
                        .metrics
                        .speak_to_speech
                        .observe(asked.elapsed().as_secs_f64());
                }
                SessionEvent::SpeechStarted {
                    session_id,
                    source: SpeechSource::Speak { utterance },
                    text: words.map(|(text, _)| text.clone()),
                }
            }
            VoiceEvent::SpeechEnded {
                utterance,
                interrupted,
            } => {
                self.speech.speaking = None;
                self.speech.words.remove(&utterance);
                SessionEvent::SpeechEnded {
                    session_id,
                    source: SpeechSource::Speak { utterance },
                    interrupted,
                }
            }
            VoiceEvent::SpeechFailed { utterance, error } => {
                self.speech.speaking = None;
                self.speech.words.remove(&utterance);
                tracing::warn!(session = %session_id, %error, "speech failed");
                // The TTS's own sentence (e.g. the voice does not exist): what an operator fixes.
                SessionEvent::SpeechFailed {
                    session_id,
                    utterance,
                    message: error,
                }
            }
            VoiceEvent::AgentSpeech { speaking: true, .. } => SessionEvent::SpeechStarted {
                session_id,
                source: SpeechSource::Agent,
                text: None,
            },
            VoiceEvent::AgentSpeech {
                speaking: false,
                interrupted,
            } => SessionEvent::SpeechEnded {
                session_id,
                source: SpeechSource::Agent,
                interrupted,
            },
            VoiceEvent::Transcript { speaker, text } => SessionEvent::Transcript {
                session_id,
                speaker,
                text,
            },
            VoiceEvent::Cut => {
                if let Some(room) = &self.children.room {
                    room.do_send(super::room::ClearAudio);
                }
                return;
            }
            VoiceEvent::AgentPlayback(notice) => {
                if let Some(room) = &self.children.room {
                    room.do_send(notice);
                }
                return;
            }
            VoiceEvent::Provider {
                provider,
                connected,
                listening,
                detail,
            } => {
                self.speech.voice_status = Some(crate::domain::events::VoiceStatus {
                    provider,
                    connected,
                    listening,
                    detail,
                });
                return self.broadcast_status();
            }
        };
        self.emit(event);
    }
}
