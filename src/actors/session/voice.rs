//! The VoiceBridge child: turns `speak` text into 16 kHz PCM and plays it out in real time to the
//! session's audio consumers, one utterance after another; `interrupt` cuts the current one and
//! drops the queue. Synthesis and playout run off the actor; their progress comes back as messages.

use std::collections::VecDeque;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::messages::VoiceEvent;
use crate::voice::{tts, PcmChunk, CHUNK_MS, CHUNK_SAMPLES};

/// Speak `text`; with `interrupt`, first cut what is playing and drop the queue.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Say {
    pub utterance: u64,
    pub text: String,
    pub interrupt: bool,
}

/// Cut the current utterance and drop the queue.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Interrupt;

/// From the playout task.
#[derive(Message)]
#[rtype(result = "()")]
enum Playout {
    Started(u64),
    Ended(u64),
    Failed(u64, String),
}

struct Utterance {
    id: u64,
    text: String,
}

pub struct VoiceBridge {
    voice: String,
    events: Recipient<VoiceEvent>,
    audio: broadcast::Sender<PcmChunk>,
    queue: VecDeque<Utterance>,
    playing: Option<(u64, JoinHandle<()>)>,
}

impl VoiceBridge {
    pub fn new(
        voice: String,
        events: Recipient<VoiceEvent>,
        audio: broadcast::Sender<PcmChunk>,
    ) -> Self {
        Self {
            voice,
            events,
            audio,
            queue: VecDeque::new(),
            playing: None,
        }
    }

    fn next(&mut self, ctx: &mut Context<Self>) {
        if self.playing.is_some() {
            return;
        }
        let Some(utterance) = self.queue.pop_front() else {
            return;
        };
        let me = ctx.address();
        let audio = self.audio.clone();
        let voice = self.voice.clone();
        let id = utterance.id;
        let task = actix_web::rt::spawn(async move {
            let samples = match tts::synthesize(&utterance.text, &voice).await {
                Ok(samples) => samples,
                Err(e) => return me.do_send(Playout::Failed(id, e.to_string())),
            };
            let mut tick = tokio::time::interval(Duration::from_millis(CHUNK_MS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut first = true;
            for chunk in samples.chunks(CHUNK_SAMPLES) {
                tick.tick().await;
                if first {
                    me.do_send(Playout::Started(id));
                    first = false;
                }
                // No consumer is fine: audio is real-time, not stored.
                let _ = audio.send(PcmChunk::from(chunk));
            }
            // The last chunk plays for one more tick.
            tick.tick().await;
            me.do_send(Playout::Ended(id));
        });
        self.playing = Some((id, task));
    }

    fn cut(&mut self) {
        self.queue.clear();
        if let Some((id, task)) = self.playing.take() {
            task.abort();
            self.events.do_send(VoiceEvent::SpeechEnded {
                utterance: id,
                interrupted: true,
            });
        }
    }
}

impl Actor for VoiceBridge {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some((_, task)) = self.playing.take() {
            task.abort();
        }
    }
}

impl Handler<Say> for VoiceBridge {
    type Result = ();

    fn handle(&mut self, msg: Say, ctx: &mut Self::Context) {
        if msg.interrupt {
            self.cut();
        }
        self.queue.push_back(Utterance {
            id: msg.utterance,
            text: msg.text,
        });
        self.next(ctx);
    }
}

impl Handler<Interrupt> for VoiceBridge {
    type Result = ();

    fn handle(&mut self, _: Interrupt, _: &mut Self::Context) {
        self.cut();
    }
}

impl Handler<Playout> for VoiceBridge {
    type Result = ();

    fn handle(&mut self, msg: Playout, ctx: &mut Self::Context) {
        let current = self.playing.as_ref().map(|(id, _)| *id);
        match msg {
            Playout::Started(id) if current == Some(id) => self
                .events
                .do_send(VoiceEvent::SpeechStarted { utterance: id }),
            Playout::Ended(id) if current == Some(id) => {
                self.playing = None;
                self.events.do_send(VoiceEvent::SpeechEnded {
                    utterance: id,
                    interrupted: false,
                });
                self.next(ctx);
            }
            Playout::Failed(id, error) if current == Some(id) => {
                self.playing = None;
                self.events.do_send(VoiceEvent::SpeechFailed {
                    utterance: id,
                    error,
                });
                self.next(ctx);
            }
            // News of an utterance already cut.
            _ => {}
        }
    }
}
