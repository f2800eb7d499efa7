//! Local text-to-speech through libespeak-ng (the library behind Debian's `espeak-ng`, loaded at
//! run time): one thread owns it (the library keeps global state), synthesises one text at a time
//! in its synchronous mode, and hands back the samples resampled to 16 kHz with espeak's own
//! phoneme events: what it said when, which the renderer turns into mouth shapes.
//!
//! ```text
//! let speech = synthesize("Peter bought a map.", "en").await?;
//! speech.phonemes[0] // Phoneme { at: 0, ipa: "p" } ... at: 16 kHz sample where it starts
//! ```

use std::collections::{HashMap, VecDeque};
use std::ffi::{c_char, c_int, c_short, c_uint, c_void, CString};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, OnceCell};

use super::resample::resample;
use super::{LIPS_AHEAD, SAMPLE_RATE};

#[derive(Debug, Clone, thiserror::Error)]
pub enum TtsError {
    #[error("espeak-ng could not be started ({0}); install it with `make setup`")]
    Spawn(String),
    #[error("espeak-ng failed: {0}")]
    Failed(String),
    #[error("espeak-ng produced no usable audio: {0}")]
    BadAudio(String),
}

/// A synthesised text: its 16 kHz mono samples, and the phonemes and words espeak-ng spoke in
/// them.
#[derive(Debug, Clone)]
pub struct Speech {
    pub samples: Arc<[i16]>,
    /// In order of `at`.
    pub phonemes: Arc<[Phoneme]>,
    /// In order of `at`: where each word of the text is spoken, as a voice that aligns its text
    /// tells (what `lips_bench` builds ElevenLabs-like character timing from).
    pub words: Arc<[Word]>,
}

/// One word of a [`Speech`]: where it starts (a 16 kHz sample index) and which characters of the
/// text it is (`chars.start` counts characters, not bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub at: usize,
    pub chars: std::ops::Range<usize>,
}

/// One phoneme of a [`Speech`]: where it starts (a 16 kHz sample index) and what it is (IPA, as
/// espeak-ng writes it: `p`, `aɪ`, `ˈɑː`; a pause is empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Phoneme {
    pub at: usize,
    pub ipa: Arc<str>,
}

impl Speech {
    /// The phoneme spoken at `sample` (the last to start at or before it); a pause before the
    /// first.
    pub fn phoneme_at(phonemes: &[Phoneme], sample: usize) -> Arc<str> {
        match phonemes.partition_point(|p| p.at <= sample) {
            0 => Arc::from(""),
            i => phonemes[i - 1].ipa.clone(),
        }
    }

    /// The phoneme a chunk of samples `start..stop` carries: the one spoken [`LIPS_AHEAD`] past
    /// its middle, as lips take their shape before the sound is heard.
    pub fn chunk_phoneme(phonemes: &[Phoneme], start: usize, stop: usize) -> Arc<str> {
        Self::phoneme_at(phonemes, (start + stop) / 2 + LIPS_AHEAD)
    }
}

/// Speaks `text` with `voice` (an espeak-ng voice name such as `en` or `en-us+f3`). It runs on
/// the library's own thread, never on an actor's.
pub async fn synthesize(text: &str, voice: &str) -> Result<Speech, TtsError> {
    let (reply, answer) = oneshot::channel();
    let job = Job {
        text: text.replace(['\r', '\n', '\0'], " "),
        voice: voice.to_string(),
        reply,
    };
    engine()
        .send(job)
        .map_err(|_| TtsError::Spawn("its thread is gone".into()))?;
    answer
        .await
        .map_err(|_| TtsError::Failed("its thread ended mid-text".into()))?
}

/// A synthesis that takes longer is abandoned.
const TIMEOUT: Duration = Duration::from_secs(20);

/// The library's soname (Debian's `libespeak-ng1`, which `espeak-ng` depends on).
const LIBRARY: &str = "libespeak-ng.so.1";

struct Job {
    text: String,
    voice: String,
    reply: oneshot::Sender<Result<Speech, TtsError>>,
}

/// The thread that owns the library, started on first use.
fn engine() -> &'static std_mpsc::Sender<Job> {
    static ENGINE: OnceLock<std_mpsc::Sender<Job>> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("espeak-ng".into())
            .spawn(move || {
                let library = Espeak::load();
                if let Ok(espeak) = &library {
                    let _ = VERSION.set(espeak.version());
                }
                for job in rx {
                    let result = match &library {
                        Ok(espeak) => espeak.speak(&job.text, &job.voice),
                        Err(e) => Err(e.clone()),
                    };
                    let _ = job.reply.send(result);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "the espeak-ng thread could not be started");
        }
        tx
    })
}

/// The library's version, once its thread has loaded it.
static VERSION: OnceLock<String> = OnceLock::new();

/// Whether the library loads and speaks `voice`, for `serve --check`: its version. It asks the
/// library's own thread, the only one that initialises it (the library keeps global state).
pub async fn check(voice: &str) -> Result<String, TtsError> {
    synthesize("ready", voice).await?;
    Ok(format!(
        "libespeak-ng {}",
        VERSION.get().map_or("(version unknown)", String::as_str)
    ))
}

/// `espeak_EVENT` of `speak_lib.h`.
#[repr(C)]
struct Event {
    kind: c_int,
    unique_identifier: c_uint,
    text_position: c_int,
    length: c_int,
    /// Milliseconds into the synthesis.
    audio_position: c_int,
    sample: c_int,
    user_data: *mut c_void,
    /// For a phoneme event: its name, up to 8 bytes, NUL-terminated when shorter.
    id: [u8; 8],
}

const EVENT_LIST_TERMINATED: c_int = 0;
const EVENT_WORD: c_int = 1;
const EVENT_PHONEME: c_int = 7;
const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const INITIALIZE_PHONEME_EVENTS: c_int = 0x0001;
const INITIALIZE_PHONEME_IPA: c_int = 0x0002;
const INITIALIZE_DONT_EXIT: c_int = 0x8000;
const POS_CHARACTER: c_int = 1;
const CHARS_UTF8: c_uint = 1;
const ENDPAUSE: c_uint = 0x1000;
const EE_OK: c_int = 0;

type Callback = unsafe extern "C" fn(*mut c_short, c_int, *mut Event) -> c_int;

/// The library's entry points this module uses, resolved once.
struct Espeak {
    _lib: libloading::Library,
    rate: u32,
    set_voice: unsafe extern "C" fn(*const c_char) -> c_int,
    synth: unsafe extern "C" fn(
        *const c_void,
        usize,
        c_uint,
        c_int,
        c_uint,
        c_uint,
        *mut c_uint,
        *mut c_void,
    ) -> c_int,
    info: unsafe extern "C" fn(*mut *const c_char) -> *const c_char,
}

/// What the callback gathers during one synthesis (the library calls it on this same thread).
struct Gathered {
    samples: Vec<i16>,
    /// (milliseconds, IPA).
    phonemes: Vec<(u32, String)>,
    /// (milliseconds, first character counted from 1, characters).
    words: Vec<(u32, usize, usize)>,
    deadline: Instant,
}

thread_local! {
    /// The synthesis in progress on the library's thread (null between syntheses). The library
    /// calls back on the thread that called `espeak_Synth`, with or without events, so the
    /// buffer is found here rather than through an event's `user_data`.
    static GATHERING: std::cell::Cell<*mut Gathered> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

unsafe extern "C" fn gather(wav: *mut c_short, n: c_int, events: *mut Event) -> c_int {
    let gathered = GATHERING.get();
    if gathered.is_null() {
        return 1;
    }
    // SAFETY: `gathered` is the live `Gathered` of the `espeak_Synth` call this callback runs
    // inside; `wav` holds `n` samples; `events` is a list ended by an event of type 0.
    unsafe {
        let mut event = events;
        while !event.is_null() && (*event).kind != EVENT_LIST_TERMINATED {
            if (*event).kind == EVENT_WORD {
                (*gathered).words.push((
                    (*event).audio_position.max(0) as u32,
                    (*event).text_position.max(1) as usize,
                    (*event).length.max(0) as usize,
                ));
            }
            if (*event).kind == EVENT_PHONEME {
                let id = &(*event).id;
                let len = id.iter().position(|b| *b == 0).unwrap_or(id.len());
                let ipa = String::from_utf8_lossy(&id[..len]).into_owned();
                (*gathered)
                    .phonemes
                    .push(((*event).audio_position.max(0) as u32, ipa));
            }
            event = event.add(1);
        }
        if !wav.is_null() && n > 0 {
            (*gathered)
                .samples
                .extend_from_slice(std::slice::from_raw_parts(wav, n as usize));
        }
        // 1 aborts the synthesis.
        c_int::from(Instant::now() > (*gathered).deadline)
    }
}

impl Espeak {
    fn load() -> Result<Self, TtsError> {
        let missing = |e: libloading::Error| TtsError::Spawn(format!("{LIBRARY}: {e}"));
        // SAFETY: loading runs the library's initialisers, which have no preconditions; each symbol
        // is declared with its `speak_lib.h` signature.
        unsafe {
            let lib = libloading::Library::new(LIBRARY).map_err(missing)?;
            let initialize: libloading::Symbol<
                unsafe extern "C" fn(c_int, c_int, *const c_char, c_int) -> c_int,
            > = lib.get(b"espeak_Initialize\0").map_err(missing)?;
            let set_callback: libloading::Symbol<unsafe extern "C" fn(Callback)> =
                lib.get(b"espeak_SetSynthCallback\0").map_err(missing)?;
            let set_voice = *lib.get(b"espeak_SetVoiceByName\0").map_err(missing)?;
            let synth = *lib.get(b"espeak_Synth\0").map_err(missing)?;
            let info = *lib.get(b"espeak_Info\0").map_err(missing)?;
            let rate = initialize(
                AUDIO_OUTPUT_SYNCHRONOUS,
                0,
                std::ptr::null(),
                INITIALIZE_PHONEME_EVENTS | INITIALIZE_PHONEME_IPA | INITIALIZE_DONT_EXIT,
            );
            if rate <= 0 {
                return Err(TtsError::Spawn(
                    "espeak_Initialize failed (is espeak-ng-data installed?)".into(),
                ));
            }
            set_callback(gather);
            Ok(Self {
                rate: rate as u32,
                set_voice,
                synth,
                info,
                _lib: lib,
            })
        }
    }

    fn version(&self) -> String {
        // SAFETY: `espeak_Info` returns a static NUL-terminated string; a null out-pointer is
        // allowed (the data path is not wanted).
        let version = unsafe { std::ffi::CStr::from_ptr((self.info)(std::ptr::null_mut())) };
        version.to_string_lossy().into_owned()
    }

    fn speak(&self, text: &str, voice: &str) -> Result<Speech, TtsError> {
        let name =
            CString::new(voice).map_err(|_| TtsError::Failed("a NUL in the voice".into()))?;
        // SAFETY: a NUL-terminated name; the library copies what it keeps.
        if unsafe { (self.set_voice)(name.as_ptr()) } != EE_OK {
            return Err(TtsError::Failed(format!(
                "the voice does not exist: {voice:?}"
            )));
        }
        let text = CString::new(text).map_err(|_| TtsError::Failed("a NUL in the text".into()))?;
        let mut gathered = Gathered {
            samples: Vec::new(),
            phonemes: Vec::new(),
            words: Vec::new(),
            deadline: Instant::now() + TIMEOUT,
        };
        let bytes = text.as_bytes_with_nul();
        GATHERING.set(&mut gathered);
        // SAFETY: synchronous mode: the callback (on this thread) sees `gathered` only during
        // this call, and the text outlives it.
        let status = unsafe {
            (self.synth)(
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                POS_CHARACTER,
                0,
                CHARS_UTF8 | ENDPAUSE,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        GATHERING.set(std::ptr::null_mut());
        if status != EE_OK {
            return Err(TtsError::Failed(format!("espeak_Synth answered {status}")));
        }
        if Instant::now() > gathered.deadline {
            return Err(TtsError::Failed(format!("timed out after {TIMEOUT:?}")));
        }
        if gathered.samples.is_empty() {
            return Err(TtsError::BadAudio("no samples".into()));
        }
        let samples = resample(&gathered.samples, self.rate, SAMPLE_RATE);
        let at = |ms: u32| (ms as usize * SAMPLE_RATE as usize / 1000).min(samples.len());
        let phonemes = gathered
            .phonemes
            .into_iter()
            .map(|(ms, ipa)| Phoneme {
                at: at(ms),
                ipa: ipa.into(),
            })
            .collect();
        // The library also names a word of no characters at the end of some texts.
        let words = gathered
            .words
            .into_iter()
            .filter(|(_, _, len)| *len > 0)
            .map(|(ms, first, len)| Word {
                at: at(ms),
                chars: first - 1..first - 1 + len,
            })
            .collect();
        Ok(Speech {
            samples: samples.into(),
            phonemes,
            words,
        })
    }
}

type Key = (String, String);
type Slot = Arc<OnceCell<Result<Speech, TtsError>>>;
/// The slots by key, and the keys oldest first (for eviction).
type Entries = (HashMap<Key, Slot>, VecDeque<Key>);

/// Recent syntheses, shared by every session of a server: a `speak` fanned out to a thousand
/// sessions runs espeak-ng once, and the others wait for that one run (single flight).
#[derive(Clone, Default)]
pub struct TtsCache {
    inner: Arc<Mutex<Entries>>,
}

/// Texts kept; the oldest goes first.
const CACHE_ENTRIES: usize = 128;

impl TtsCache {
    pub async fn synthesize(&self, text: &str, voice: &str) -> Result<Speech, TtsError> {
        let key = (voice.to_string(), text.to_string());
        let slot = {
            // unwrap: the lock is never held across a panic (plain map operations).
            let mut guard = self.inner.lock().unwrap();
            let (map, order) = &mut *guard;
            match map.get(&key) {
                Some(slot) => slot.clone(),
                None => {
                    let slot = Slot::default();
                    map.insert(key.clone(), slot.clone());
                    order.push_back(key.clone());
                    while order.len() > CACHE_ENTRIES {
                        if let Some(old) = order.pop_front() {
                            map.remove(&old);
                        }
                    }
                    slot
                }
            }
        };
        let result = slot.get_or_init(|| synthesize(text, voice)).await.clone();
        if result.is_err() {
            // A failure is not remembered: the next try runs again.
            let mut guard = self.inner.lock().unwrap();
            if guard.0.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                guard.0.remove(&key);
                guard.1.retain(|k| k != &key);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn espeak_speaks_and_says_which_phonemes_when() {
        // `make setup` installs espeak-ng; without it this fails with the sentence that says so.
        let speech = synthesize("Hello there, this is a test.", "en")
            .await
            .unwrap();
        let samples = &speech.samples;
        // About two seconds of speech, and not silence.
        assert!(samples.len() > SAMPLE_RATE as usize, "{}", samples.len());
        assert!(samples.iter().map(|s| s.unsigned_abs()).max().unwrap() > 1000);
        let phonemes = &speech.phonemes;
        assert!(phonemes.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(phonemes.iter().all(|p| p.at <= samples.len()));
        let said: String = phonemes.iter().map(|p| &*p.ipa).collect();
        assert!(
            said.contains('h') && said.contains('ð') && said.contains('s'),
            "{said}"
        );
        // Each word, in order, where its phonemes are.
        let text: Vec<char> = "Hello there, this is a test.".chars().collect();
        let words: Vec<String> = speech
            .words
            .iter()
            .map(|w| text[w.chars.clone()].iter().collect())
            .collect();
        assert_eq!(words, ["Hello", "there", "this", "is", "a", "test"]);
        assert!(speech.words.windows(2).all(|w| w[0].at < w[1].at));
        let there = speech.words[1].at;
        let first_after = &phonemes[phonemes.partition_point(|p| p.at < there)..];
        assert!(first_after[0].ipa.contains('ð'), "{first_after:?}");
    }

    #[actix_web::test]
    async fn the_library_speaks_all_that_the_command_line_speaks() {
        let text = "The birch canoe slid on the smooth planks.";
        let output = std::process::Command::new("espeak-ng")
            .args(["--stdout", "-v", "en", text])
            .output()
            .expect("espeak-ng runs (`make setup` installs it)");
        // A canonical 44-byte header, then 22.05 kHz s16 samples to the end.
        let cli = (output.stdout.len() - 44) as f64 / 2.0 / 22_050.0;
        let speech = synthesize(text, "en").await.unwrap();
        let ours = speech.samples.len() as f64 / SAMPLE_RATE as f64;
        assert!(
            (ours - cli).abs() < 0.05 * cli,
            "{ours:.2} s against {cli:.2} s"
        );
        let last = speech.phonemes.last().unwrap().at;
        assert!(last as f64 > 0.8 * speech.samples.len() as f64, "{last}");
    }

    #[actix_web::test]
    async fn a_bilabial_is_spoken_where_its_phoneme_says() {
        let speech = synthesize("a map", "en").await.unwrap();
        let m = speech
            .phonemes
            .iter()
            .position(|p| &*p.ipa == "m")
            .expect("an m");
        let (start, end) = (speech.phonemes[m].at, speech.phonemes[m + 1].at);
        assert!(end > start + SAMPLE_RATE as usize / 50, "{start}..{end}");
        // An /m/ is voiced through the nose: quieter than the vowel after it.
        let rms = |x: &[i16]| {
            (x.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
        };
        let after_end = speech
            .phonemes
            .get(m + 2)
            .map_or(speech.samples.len(), |p| p.at);
        assert!(
            rms(&speech.samples[start..end]) < rms(&speech.samples[end..after_end]),
            "{:?}",
            speech.phonemes
        );
    }

    #[actix_web::test]
    async fn an_unknown_voice_is_an_error_and_the_next_text_still_speaks() {
        let e = synthesize("hello", "no-such-voice").await.unwrap_err();
        assert!(e.to_string().contains("no-such-voice"), "{e}");
        let texts = ["one", "two", "three"];
        let all = futures_util::future::join_all(texts.iter().map(|t| synthesize(t, "en"))).await;
        assert!(all
            .iter()
            .all(|r| r.as_ref().is_ok_and(|s| !s.samples.is_empty())));
    }
}
