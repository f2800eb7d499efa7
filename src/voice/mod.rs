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
/// How far ahead of the sound a chunk of known text names its phoneme: lips take their shape
/// before the sound they make is heard (a /p/ closes before its burst).
pub const LIPS_AHEAD: usize = SAMPLE_RATE as usize * 20 / 1000;

/// One chunk of 16 kHz mono PCM, shared by every consumer (preview, renderer, room).
pub type PcmChunk = Arc<[i16]>;

/// 20 ms of the avatar's voice: its samples, and the phoneme spoken in them where the text is known
/// (the local TTS says; a pause is `""`). `None` for a voice that is only audio (a voice agent's,
/// a room agent's stream): the renderer then reads the mouth from the sound.
#[derive(Debug, Clone)]
pub struct Voiced {
    pub pcm: PcmChunk,
    pub phoneme: Option<Arc<str>>,
}

impl Voiced {
    /// Audio alone.
    pub fn audio(pcm: PcmChunk) -> Self {
        Self { pcm, phoneme: None }
    }
}
