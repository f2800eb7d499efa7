//! What the task keeps while it cannot deliver: events waiting for room in the consumer's channel
//! (bounded, with drop accounting), and text turns waiting for the next conversation.

use std::collections::VecDeque;

use super::protocol::Outgoing;
use super::types::ProviderEvent;

/// Events the backlog holds at most, audio included (see the module doc).
pub const MAX_BACKLOG_EVENTS: usize = 1024;
/// Contextual updates and user messages held while disconnected.
pub const MAX_HELD_TURNS: usize = 64;

/// Keeps a text turn for the next conversation; audio and activity are stale by then.
pub(super) fn hold(held: &mut VecDeque<Outgoing>, backlog: &mut Backlog, outgoing: Outgoing) {
    match outgoing {
        Outgoing::ContextualUpdate(_) | Outgoing::UserMessage(_) => {
            if held.len() >= MAX_HELD_TURNS {
                held.pop_front();
                backlog.push(ProviderEvent::Error(format!(
                    "not connected: dropped the oldest of {MAX_HELD_TURNS} held messages"
                )));
            }
            held.push_back(outgoing);
        }
        Outgoing::UserActivity | Outgoing::UserAudio(_) => {
            tracing::trace!("not connected: user audio or activity discarded");
        }
    }
}

fn is_audio(event: &ProviderEvent) -> bool {
    matches!(event, ProviderEvent::Audio { .. })
}

/// Events waiting for room in the channel, with the bounds and drop accounting of the module doc.
pub(super) struct Backlog {
    queue: VecDeque<ProviderEvent>,
    audio_samples: usize,
    max_audio_samples: usize,
    max_events: usize,
    dropped_audio_events: u64,
    dropped_audio_samples: u64,
    dropped_other_events: u64,
}

impl Backlog {
    pub(super) fn new(max_audio_samples: usize, max_events: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            audio_samples: 0,
            max_audio_samples,
            max_events: max_events.max(1),
            dropped_audio_events: 0,
            dropped_audio_samples: 0,
            dropped_other_events: 0,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty() && !self.has_dropped()
    }

    fn has_dropped(&self) -> bool {
        self.dropped_audio_events + self.dropped_other_events > 0
    }

    pub(super) fn push(&mut self, event: ProviderEvent) {
        if let ProviderEvent::Interrupted { event_id } = event {
            self.purge_interrupted(event_id);
        }
        if let ProviderEvent::Audio { pcm, .. } = &event {
            self.audio_samples += pcm.len();
        }
        self.queue.push_back(event);
        // The newest event always stays: it is next in line once the consumer reads again, and a
        // single chunk larger than the bound must not be lost to a consumer that keeps up.
        while self.audio_samples > self.max_audio_samples {
            let older = self.queue.len() - 1;
            match self.queue.iter().take(older).position(is_audio) {
                Some(i) => self.drop_at(i),
                None => break,
            }
        }
        while self.queue.len() > self.max_events {
            let older = self.queue.len() - 1;
            let i = self
                .queue
                .iter()
                .take(older)
                .position(is_audio)
                .unwrap_or(0);
            self.drop_at(i);
        }
    }

    /// Drops one event and counts it for the `Dropped` notice.
    fn drop_at(&mut self, i: usize) {
        match self.queue.remove(i) {
            Some(ProviderEvent::Audio { pcm, .. }) => {
                self.audio_samples -= pcm.len();
                self.dropped_audio_events += 1;
                self.dropped_audio_samples += pcm.len() as u64;
            }
            Some(_) => self.dropped_other_events += 1,
            None => {}
        }
    }

    /// Audio of the interrupted turn that is still here, back to the current connection's start.
    fn purge_interrupted(&mut self, event_id: u64) {
        let mut i = self.queue.len();
        while i > 0 {
            i -= 1;
            match &self.queue[i] {
                ProviderEvent::Connected { .. } => break,
                ProviderEvent::Audio {
                    event_id: id, pcm, ..
                } if *id <= event_id => {
                    self.audio_samples -= pcm.len();
                    self.queue.remove(i);
                }
                _ => {}
            }
        }
    }

    pub(super) fn pop(&mut self) -> Option<ProviderEvent> {
        if self.has_dropped() {
            let notice = ProviderEvent::Dropped {
                audio_events: self.dropped_audio_events,
                audio_samples: self.dropped_audio_samples,
                other_events: self.dropped_other_events,
            };
            self.dropped_audio_events = 0;
            self.dropped_audio_samples = 0;
            self.dropped_other_events = 0;
            return Some(notice);
        }
        let event = self.queue.pop_front()?;
        if let ProviderEvent::Audio { pcm, .. } = &event {
            self.audio_samples -= pcm.len();
        }
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(event_id: u64, n: usize) -> ProviderEvent {
        ProviderEvent::Audio {
            event_id,
            pcm: vec![event_id as i16; n],
            said: None,
        }
    }

    #[test]
    fn backlog_bounds_audio_and_reports_what_it_dropped() {
        let mut backlog = Backlog::new(10, 100);
        backlog.push(ProviderEvent::Connected {
            conversation_id: "c".into(),
        });
        for id in 1..=4 {
            backlog.push(audio(id, 4));
        }
        // 16 samples > 10: the two oldest went.
        assert_eq!(
            backlog.pop(),
            Some(ProviderEvent::Dropped {
                audio_events: 2,
                audio_samples: 8,
                other_events: 0
            })
        );
        assert!(matches!(
            backlog.pop(),
            Some(ProviderEvent::Connected { .. })
        ));
        assert_eq!(backlog.pop(), Some(audio(3, 4)));
        assert_eq!(backlog.pop(), Some(audio(4, 4)));
        assert_eq!(backlog.pop(), None);
        assert!(backlog.is_empty());

        // A single chunk over the bound still goes to a consumer that keeps up.
        let mut tiny = Backlog::new(10, 100);
        tiny.push(audio(1, 50));
        assert_eq!(tiny.pop(), Some(audio(1, 50)));
        tiny.push(audio(2, 50));
        tiny.push(audio(3, 50));
        assert!(matches!(
            tiny.pop(),
            Some(ProviderEvent::Dropped {
                audio_events: 1,
                ..
            })
        ));
        assert_eq!(tiny.pop(), Some(audio(3, 50)));

        let mut few = Backlog::new(1000, 2);
        for text in ["a", "b", "c"] {
            few.push(ProviderEvent::UserTranscript(text.into()));
        }
        assert!(matches!(
            few.pop(),
            Some(ProviderEvent::Dropped {
                other_events: 1,
                ..
            })
        ));
        assert_eq!(few.pop(), Some(ProviderEvent::UserTranscript("b".into())));
    }

    #[test]
    fn backlog_purges_the_interrupted_turn_of_the_current_connection_only() {
        let mut backlog = Backlog::new(1000, 100);
        backlog.push(audio(5, 1)); // an earlier connection's
        backlog.push(ProviderEvent::Connected {
            conversation_id: "c2".into(),
        });
        for id in 1..=4 {
            backlog.push(audio(id, 1));
        }
        backlog.push(ProviderEvent::Interrupted { event_id: 3 });
        let left: Vec<_> = std::iter::from_fn(|| backlog.pop()).collect();
        assert_eq!(
            left,
            vec![
                audio(5, 1),
                ProviderEvent::Connected {
                    conversation_id: "c2".into()
                },
                audio(4, 1),
                ProviderEvent::Interrupted { event_id: 3 },
            ]
        );
        assert_eq!(backlog.audio_samples, 0);
    }

    #[test]
    fn held_turns_keep_text_drop_stale_audio_and_report_overflow() {
        let (mut held, mut backlog) = (VecDeque::new(), Backlog::new(1000, 100));
        hold(&mut held, &mut backlog, Outgoing::UserAudio(vec![1, 2]));
        hold(&mut held, &mut backlog, Outgoing::UserActivity);
        assert!(held.is_empty() && backlog.is_empty());
        for i in 0..=MAX_HELD_TURNS {
            hold(
                &mut held,
                &mut backlog,
                Outgoing::UserMessage(i.to_string()),
            );
        }
        assert_eq!(held.len(), MAX_HELD_TURNS);
        assert_eq!(held.front(), Some(&Outgoing::UserMessage("1".into())));
        assert!(matches!(backlog.pop(), Some(ProviderEvent::Error(e)) if e.contains("oldest")));
        assert!(backlog.is_empty());
    }
}
