//! Voices: the audio format every provider produces (16 kHz mono s16 PCM in 20 ms chunks), the
//! local TTS (espeak-ng), the ElevenLabs conversational-agent client, and the resampler that
//! brings other audio (a user's microphone) to that format.

pub mod elevenlabs;
pub mod resample;
pub mod tts;

use std::sync::Arc;

pub const SAMPLE_RATE: u32 = 16_000;
/// 20 ms at 16 kHz: the unit audio moves in.
pub const CHUNK_SAMPLES: usize = 320;
pub const CHUNK_MS: u64 = 20;

/// One chunk of 16 kHz mono PCM, shared by every consumer (preview, renderer, room).
pub type PcmChunk = Arc<[i16]>;
