//! The VoiceBridge's player: one task per bridge, real-time playout of whatever is queued
//! (utterances of the local TTS, an agent's turns), in 20 ms chunks into the session's audio
//! channel, reporting starts and ends back to the bridge.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{broadcast, mpsc};

use super::VoiceBridge;
use crate::voice::{PcmChunk, CHUNK_MS, CHUNK_SAMPLES};

pub(super) enum PlayerCommand {
    Utterance(u64, Arc<[i16]>),
    Agent(Vec<i16>),
    /// Cut everything; answers which utterance (if any) was cut mid-play.
    CutAll,
    /// Drop the agent's unplayed audio (an interruption of its turn, or a `speak`).
    CutAgent,
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
}

enum Segment {
    Utterance {
        id: u64,
        samples: Arc<[i16]>,
        pos: usize,
    },
    Agent {
        samples: VecDeque<i16>,
        dry_ticks: u32,
    },
}

/// Ticks an agent turn may run dry (audio arrives in bursts) before it counts as ended.
const AGENT_DRY_TICKS: u32 = 10;

fn started(segment: &Segment) -> bool {
    match segment {
        Segment::Utterance { pos, .. } => *pos > 0,
        Segment::Agent { .. } => true,
    }
}

fn ended(segment: &Segment, interrupted: bool) -> Played {
    match segment {
        Segment::Utterance { id, .. } => Played::UtteranceEnded {
            id: *id,
            interrupted,
        },
        Segment::Agent { .. } => Played::AgentEnded { interrupted },
    }
}

pub(super) async fn player(
    mut commands: mpsc::UnboundedReceiver<PlayerCommand>,
    audio: broadcast::Sender<PcmChunk>,
    bridge: Addr<VoiceBridge>,
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
                Some(PlayerCommand::Utterance(id, samples)) => {
                    queue.push_back(Segment::Utterance { id, samples, pos: 0 })
                }
                Some(PlayerCommand::Agent(samples)) => match queue.back_mut() {
                    Some(Segment::Agent { samples: held, dry_ticks }) => {
                        held.extend(samples);
                        *dry_ticks = 0;
                    }
                    _ => queue.push_back(Segment::Agent { samples: samples.into(), dry_ticks: 0 }),
                },
                Some(PlayerCommand::CutAll) => {
                    if let Some(done) = finishing.take() {
                        bridge.do_send(done);
                    }
                    if let Some(front) = queue.front().filter(|s| started(s)) {
                        bridge.do_send(ended(front, true));
                    }
                    queue.clear();
                }
                Some(PlayerCommand::CutAgent) => {
                    if let Some(front @ Segment::Agent { .. }) = queue.front() {
                        bridge.do_send(ended(front, true));
                    }
                    queue.retain(|s| matches!(s, Segment::Utterance { .. }));
                }
            },
            _ = tick.tick(), if !queue.is_empty() || finishing.is_some() => {
                if let Some(done) = finishing.take() {
                    bridge.do_send(done);
                }
                let Some(front) = queue.front_mut() else { continue };
                let chunk: Option<Vec<i16>> = match front {
                    Segment::Utterance { id, samples, pos } => {
                        if *pos == 0 {
                            bridge.do_send(Played::UtteranceStarted(*id));
                        }
                        let end = (*pos + CHUNK_SAMPLES).min(samples.len());
                        let chunk = samples[*pos..end].to_vec();
                        *pos = end;
                        if end >= samples.len() {
                            finishing = Some(Played::UtteranceEnded { id: *id, interrupted: false });
                            queue.pop_front();
                        }
                        Some(chunk)
                    }
                    Segment::Agent { samples, dry_ticks } => {
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
                            Some(samples.drain(..n).collect())
                        }
                    }
                };
                if let Some(chunk) = chunk {
                    // No consumer is fine: audio is real time, not stored.
                    let _ = audio.send(PcmChunk::from(chunk));
                }
            }
        }
    }
}
