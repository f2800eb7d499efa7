//! What clients ask of a live session: speak, add context, interrupt, a new prompt; and
//! [`deliver`], the one way a control channel or the REST fan-out sends such a request to
//! sessions.

use actix::prelude::*;

use super::messages::*;
use super::voice;
use super::Session;

/// Entries of added context a session keeps (the oldest go first).
const MAX_CONTEXT: usize = 200;

/// What a client asks of live sessions, on a control channel or through the REST fan-out (and,
/// from another node, over the cluster).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Directive {
    Speak { text: String, interrupt: bool },
    AddContext(String),
    Interrupt,
    Stop(EndReason),
}

/// Sends `directive` to every one of `targets` at once; answers how many took it.
pub async fn deliver(
    targets: impl IntoIterator<Item = Addr<Session>>,
    directive: &Directive,
) -> usize {
    let sends = targets.into_iter().map(|session| async move {
        match directive.clone() {
            Directive::Speak { text, interrupt } => {
                matches!(session.send(Speak { text, interrupt }).await, Ok(Ok(_)))
            }
            Directive::AddContext(text) => {
                matches!(session.send(AddContext { text }).await, Ok(Ok(())))
            }
            Directive::Interrupt => matches!(session.send(InterruptSpeech).await, Ok(Ok(()))),
            Directive::Stop(reason) => {
                session.do_send(Stop(reason));
                true
            }
        }
    });
    futures_util::future::join_all(sends)
        .await
        .into_iter()
        .filter(|took| *took)
        .count()
}

impl Handler<Speak> for Session {
    type Result = Result<u64, SessionError>;

    fn handle(&mut self, msg: Speak, _: &mut Self::Context) -> Self::Result {
        self.refuse_unless_live()?;
        let utterance = self.speech.next_utterance;
        self.speech.next_utterance += 1;
        if msg.interrupt {
            self.speech.forget_unsaid();
        }
        self.speech
            .words
            .insert(utterance, (msg.text.clone(), std::time::Instant::now()));
        if let Some(voice) = &self.children.voice {
            voice.do_send(voice::Say {
                utterance,
                text: msg.text,
                interrupt: msg.interrupt,
            });
        }
        Ok(utterance)
    }
}

impl Handler<AddContext> for Session {
    type Result = Result<(), SessionError>;

    fn handle(&mut self, msg: AddContext, _: &mut Self::Context) -> Self::Result {
        self.refuse_unless_live()?;
        let context = &mut self.speech.context;
        if context.len() == MAX_CONTEXT {
            context.remove(0);
        }
        context.push(msg.text.clone());
        let entries = context.len();
        if let Some(voice) = &self.children.voice {
            voice.do_send(voice::AddContext {
                text: msg.text.clone(),
            });
        }
        self.emit(SessionEvent::ContextAdded {
            session_id: self.row.id.clone(),
            text: msg.text,
            entries,
        });
        Ok(())
    }
}

impl Handler<InterruptSpeech> for Session {
    type Result = Result<(), SessionError>;

    fn handle(&mut self, _: InterruptSpeech, _: &mut Self::Context) -> Self::Result {
        self.refuse_unless_live()?;
        self.speech.forget_unsaid();
        if let Some(voice) = &self.children.voice {
            voice.do_send(voice::Interrupt);
        }
        // The transport's queue too, at once: the person hears the avatar stop.
        if let Some(room) = &self.children.room {
            room.do_send(super::room::ClearAudio);
        }
        Ok(())
    }
}

impl Handler<PromptUpdated> for Session {
    type Result = ();

    fn handle(&mut self, msg: PromptUpdated, _: &mut Self::Context) {
        tracing::info!(session = %self.row.id, revision = msg.revision, "prompt updated");
        if let Some(voice) = &self.children.voice {
            voice.do_send(voice::SetPrompt {
                prompt: msg.system_prompt.clone(),
            });
        }
        self.system_prompt = msg.system_prompt;
    }
}
