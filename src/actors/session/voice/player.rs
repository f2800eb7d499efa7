//! The VoiceBridge's player: one task per bridge, real-time playout of whatever is queued
//! (utterances of the local TTS, an agent's turns), in 20 ms chunks into the session's audio
//! channel, reporting starts and ends back to the bridge. A chunk whose text is known (an
//! utterance's, or an agent's where ElevenLabs aligned its characters) carries the phoneme said
//! there, a little ahead of the sound, as lips move before the voice is heard.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{broadcast, mpsc};

use crate::voice::tts::{Phoneme, Speech};
use crate::voice::{PcmChunk, Voiced, CHUNK_MS, CHUNK_SAMPLES, LIPS_AHEAD};

pub(super) enum PlayerCommand {
    Utterance(u64, Speech),
    /// An agent's audio, with the phonemes said in it where known (at offsets into its samples).
    Agent(Vec<i16>, Option<Arc<[Phoneme]>>),
    /// Cut everything; answers which utterance (if any) was cut mid-play.
    CutAll,
    /// Drop the agent's unplayed audio (an interruption of its turn, or a `speak`).
    CutAgent,
    /// More of a room agent's speech segment (LiveKit Agents' `lk.audio_stream`), which is
    /// queued at its first command (possibly empty: the stream just opened).
    Stream {
        segment: u64,
        samples: Vec<i16>,
    },
    /// The segment's stream closed: once it has played out, it is over.
    StreamEnd {
        segment: u64,
    },
}

/// From the player to the bridge.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) enum Played {
    UtteranceStarted(u64),
    UtteranceEnded {
        id: u64,
        interrupted: bool,
    },
    /// The agent's turn played out, or was cut.
    AgentEnded {
        interrupted: bool,
    },
    /// A room agent's segment played its first audio.
    StreamStarted(u64),
    /// A room agent's segment is over (exactly once per segment): played out, or cut.
    StreamEnded {
        segment: u64,
        played_samples: usize,
        interrupted: bool,
    },
}

enum Segment {
    Utterance {
        id: u64,
        samples: Arc<[i16]>,
        phonemes: Arc<[Phoneme]>,
        pos: usize,
    },
    Agent {
        samples: VecDeque<i16>,
        said: AgentSaid,
        dry_ticks: u32,
    },
    /// A segment of a room agent's speech: it waits (silent) for its stream while it is open.
    Stream {
        id: u64,
        samples: VecDeque<i16>,
        closed: bool,
        played: usize,
    },
}

/// What an agent's turn says where: each audio event's phonemes from the sample it starts at
/// (`None` where its text is unknown), so a chunk's phoneme is looked up as an utterance's is.
#[derive(Default)]
struct AgentSaid {
    /// (first sample of the event, counted from the turn's start; its phonemes), oldest first.
    events: VecDeque<(usize, Option<Arc<[Phoneme]>>)>,
    /// Samples queued so far, and played so far.
    queued: usize,
    played: usize,
}

impl AgentSaid {
    fn push(&mut self, samples: usize, phonemes: Option<Arc<[Phoneme]>>) {
        self.events.push_back((self.queued, phonemes));
        self.queued += samples;
    }

    /// The phoneme of the next `n` samples, which are played now.
    fn play(&mut self, n: usize) -> Option<Arc<str>> {
        let (start, stop) = (self.played, self.played + n);
        self.played = stop;
        // Events that ended before this chunk are done with.
        while self.events.len() > 1 && self.events[1].0 <= start {
            self.events.pop_front();
        }
        let ahead = (start + stop) / 2 + LIPS_AHEAD;
        let (from, phonemes) = self.events.iter().rev().find(|(from, _)| *from <= ahead)?;
        Some(Speech::phoneme_at(phonemes.as_ref()?, ahead - from))
    }
}

/// Ticks an agent turn may run dry (audio arrives in bursts) before it counts as ended.
const AGENT_DRY_TICKS: u32 = 10;

fn started(segment: &Segment) -> bool {
    match segment {
        Segment::Utterance { pos, .. } => *pos > 0,
        Segment::Agent { .. } => true,
        Segment::Stream { played, .. } => *played > 0,
    }
}

fn ended(segment: &Segment, interrupted: bool) -> Played {
    match segment {
        Segment::Utterance { id, .. } => Played::UtteranceEnded {
            id: *id,
            interrupted,
        },
        Segment::Agent { .. } => Played::AgentEnded { interrupted },
        Segment::Stream { id, played, .. } => Played::StreamEnded {
            segment: *id,
            played_samples: *played,
            interrupted,
        },
    }
}

/// Whether a cut must say so: what started, and every stream segment (each is owed its end).
fn owed_an_end(segment: &Segment) -> bool {
    matches!(segment, Segment::Stream { .. }) || started(segment)
}

pub(super) async fn player(
    mut commands: mpsc::UnboundedReceiver<PlayerCommand>,
    audio: broadcast::Sender<Voiced>,
    bridge: Recipient<Played>,
) {
    let mut queue: VecDeque<Segment> = VecDeque::new();
    let mut tick = tokio::time::interval(Duration::from_millis(CHUNK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // An utterance's last chunk plays for one more tick before it is over.
    let mut finishing: Option<Played> = None;
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(PlayerCommand::Utterance(id, speech)) => queue.push_back(Segment::Utterance {
                    id,
                    samples: speech.samples,
                    phonemes: speech.phonemes,
                    pos: 0,
                }),
                Some(PlayerCommand::Agent(samples, phonemes)) => match queue.back_mut() {
                    Some(Segment::Agent { samples: held, said, dry_ticks }) => {
                        said.push(samples.len(), phonemes);
                        held.extend(samples);
                        *dry_ticks = 0;
                    }
                    _ => {
                        let mut said = AgentSaid::default();
                        said.push(samples.len(), phonemes);
                        queue.push_back(Segment::Agent { samples: samples.into(), said, dry_ticks: 0 });
                    }
                },
                Some(PlayerCommand::CutAll) => {
                    if let Some(done) = finishing.take() {
                        bridge.do_send(done);
                    }
                    for (i, segment) in queue.iter().enumerate() {
                        if owed_an_end(segment) && (i == 0 || matches!(segment, Segment::Stream { .. })) {
                            bridge.do_send(ended(segment, true));
                        }
                    }
                    queue.clear();
                }
                Some(PlayerCommand::CutAgent) => {
                    for (i, segment) in queue.iter().enumerate() {
                        match segment {
                            Segment::Agent { .. } if i == 0 => bridge.do_send(ended(segment, true)),
                            Segment::Stream { .. } => bridge.do_send(ended(segment, true)),
                            _ => {}
                        }
                    }
                    queue.retain(|s| matches!(s, Segment::Utterance { .. }));
                }
                Some(PlayerCommand::Stream { segment, samples }) => {
                    let held = queue.iter_mut().find_map(|s| match s {
                        Segment::Stream { id, samples, closed: false, .. } if *id == segment => Some(samples),
                        _ => None,
                    });
                    match held {
                        Some(held) => held.extend(samples),
                        None => queue.push_back(Segment::Stream {
                            id: segment,
                            samples: samples.into(),
                            closed: false,
                            played: 0,
                        }),
                    }
                }
                Some(PlayerCommand::StreamEnd { segment }) => {
                    // A segment no longer queued was cut, and has had its end already.
                    for s in queue.iter_mut() {
                        if let Segment::Stream { id, closed, .. } = s {
                            if *id == segment {
                                *closed = true;
                            }
                        }
                    }
                }
            },
            _ = tick.tick(), if !queue.is_empty() || finishing.is_some() => {
                if let Some(done) = finishing.take() {
                    bridge.do_send(done);
                }
                let Some(front) = queue.front_mut() else { continue };
                let chunk: Option<Voiced> = match front {
                    Segment::Utterance { id, samples, phonemes, pos } => {
                        if *pos == 0 {
                            bridge.do_send(Played::UtteranceStarted(*id));
                        }
                        let end = (*pos + CHUNK_SAMPLES).min(samples.len());
                        let pcm = PcmChunk::from(&samples[*pos..end]);
                        let phoneme = Speech::chunk_phoneme(phonemes, *pos, end);
                        *pos = end;
                        if end >= samples.len() {
                            finishing = Some(Played::UtteranceEnded { id: *id, interrupted: false });
                            queue.pop_front();
                        }
                        Some(Voiced { pcm, phoneme: Some(phoneme) })
                    }
                    Segment::Stream { id, samples, closed, played } => {
                        if samples.is_empty() {
                            if *closed {
                                finishing = Some(Played::StreamEnded {
                                    segment: *id,
                                    played_samples: *played,
                                    interrupted: false,
                                });
                                queue.pop_front();
                            }
                            None
                        } else {
                            if *played == 0 {
                                bridge.do_send(Played::StreamStarted(*id));
                            }
                            let n = CHUNK_SAMPLES.min(samples.len());
                            *played += n;
                            let chunk = Voiced::audio(samples.drain(..n).collect());
                            // Its last chunk plays for one more tick before the segment is over.
                            if samples.is_empty() && *closed {
                                finishing = Some(Played::StreamEnded {
                                    segment: *id,
                                    played_samples: *played,
                                    interrupted: false,
                                });
                                queue.pop_front();
                            }
                            Some(chunk)
                        }
                    }
                    Segment::Agent { samples, said, dry_ticks } => {
                        if samples.is_empty() {
                            *dry_ticks += 1;
                            if *dry_ticks > AGENT_DRY_TICKS || queue.len() > 1 {
                                queue.pop_front();
                                bridge.do_send(Played::AgentEnded { interrupted: false });
                            }
                            None
                        } else {
                            *dry_ticks = 0;
                            let n = CHUNK_SAMPLES.min(samples.len());
                            let phoneme = said.play(n);
                            Some(Voiced { pcm: samples.drain(..n).collect(), phoneme })
                        }
                    }
                };
                if let Some(chunk) = chunk {
                    // No consumer is fine: audio is real time, not stored.
                    let _ = audio.send(chunk);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(at: usize, ipa: &str) -> Phoneme {
        Phoneme {
            at,
            ipa: Arc::from(ipa),
        }
    }

    #[test]
    fn an_agent_turn_names_each_chunk_s_phoneme_from_its_own_event_and_none_where_unknown() {
        let mut turn = AgentSaid::default();
        // Two aligned events of 40 ms each, then one without alignment.
        turn.push(640, Some(Arc::from([said(0, "m"), said(400, "a")])));
        turn.push(640, Some(Arc::from([said(0, "p")])));
        turn.push(640, None);
        let chunks: Vec<Option<String>> = (0..6)
            .map(|_| turn.play(CHUNK_SAMPLES).map(|ipa| ipa.to_string()))
            .collect();
        // A chunk takes the phoneme said 20 ms past its middle: chunk 0 (0..320) reads sample
        // 480 of the first event, chunk 1 reads 800 = the second event's 160.
        let want = [Some("a"), Some("p"), Some("p"), None, None, None];
        assert_eq!(chunks, want.map(|w| w.map(String::from)));
        // Events behind the playhead are let go.
        assert_eq!(turn.events.len(), 1);
    }
}
