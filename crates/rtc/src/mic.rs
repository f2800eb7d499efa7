//! The viewers' microphones: mixing several viewers into one 16 kHz stream, and the bounded, drop-oldest
//! queue the session's owner reads it from.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::audio::{API_FRAME, API_RATE};
use crate::ViewerId;

/// How much microphone audio waits for a slow reader before the oldest is dropped (1 s).
const QUEUE_CHUNKS: usize = 50;
/// A source that sent nothing for this long no longer holds the mix back (muted, DTX, or gone).
const SOURCE_IDLE: Duration = Duration::from_millis(100);
/// One source this far ahead of the others is mixed without waiting for them (bounds the jitter wait).
const MAX_WAIT_SAMPLES: usize = 3 * API_FRAME;
/// Per-source backlog cap (200 ms): beyond it the oldest samples go.
const MAX_SOURCE_SAMPLES: usize = (API_RATE / 5) as usize;

struct Source {
    buf: VecDeque<i16>,
    last_push: Instant,
}

/// Mixes the viewers' 16 kHz microphone streams into 20 ms chunks. A chunk is emitted when every source
/// that is currently talking has 20 ms buffered (so two talkers stay in step and the output runs at real
/// time, not once per source), or when one source is 60 ms ahead (a stalled source cannot hold the rest).
#[derive(Default)]
pub(crate) struct Mixer {
    sources: HashMap<ViewerId, Source>,
}

impl Mixer {
    pub fn push(&mut self, now: Instant, viewer: ViewerId, samples: &[i16]) -> Vec<Vec<i16>> {
        let source = self.sources.entry(viewer).or_insert_with(|| Source {
            buf: VecDeque::new(),
            last_push: now,
        });
        source.last_push = now;
        source.buf.extend(samples);
        let excess = source.buf.len().saturating_sub(MAX_SOURCE_SAMPLES);
        source.buf.drain(..excess);

        let mut chunks = Vec::new();
        loop {
            let active = self
                .sources
                .values()
                .filter(|s| now.duration_since(s.last_push) < SOURCE_IDLE || !s.buf.is_empty());
            let mut all_ready = true;
            let mut any_far_ahead = false;
            let mut any = false;
            for s in active {
                any = true;
                all_ready &= s.buf.len() >= API_FRAME;
                any_far_ahead |= s.buf.len() >= MAX_WAIT_SAMPLES;
            }
            if !any || !(all_ready || any_far_ahead) {
                break;
            }
            let mut mix = vec![0i32; API_FRAME];
            for s in self.sources.values_mut() {
                let n = s.buf.len().min(API_FRAME);
                for (acc, x) in mix.iter_mut().zip(s.buf.drain(..n)) {
                    *acc += x as i32;
                }
            }
            chunks.push(
                mix.into_iter()
                    .map(|x| x.clamp(i16::MIN as i32, i16::MAX as i32) as i16)
                    .collect(),
            );
        }
        // Forget sources that are idle and drained, so a departed viewer costs nothing.
        self.sources
            .retain(|_, s| !s.buf.is_empty() || now.duration_since(s.last_push) < SOURCE_IDLE);
        chunks
    }

    pub fn remove(&mut self, viewer: ViewerId) {
        self.sources.remove(&viewer);
    }
}

#[derive(Default)]
struct QueueState {
    chunks: VecDeque<Vec<i16>>,
    closed: bool,
    dropped: u64,
}

/// Bounded, drop-oldest hand-off from the I/O thread to the session's owner; never blocks the writer.
#[derive(Default)]
pub(crate) struct MicQueue {
    state: Mutex<QueueState>,
    notify: Notify,
}

impl MicQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // The state is a plain queue: a panic elsewhere while holding the lock cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn push(&self, chunk: Vec<i16>) {
        {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            if st.chunks.len() >= QUEUE_CHUNKS {
                st.chunks.pop_front();
                st.dropped += 1;
            }
            st.chunks.push_back(chunk);
        }
        self.notify.notify_one();
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }
}

/// The mixed microphones of a session's viewers: 16 kHz mono PCM in 20 ms chunks (320 samples), in order.
/// Holds at most one second; a reader that falls further behind loses the oldest audio, never blocks the
/// media engine. Ends (`None`) when the session is dropped.
pub struct Microphone {
    queue: Arc<MicQueue>,
}

impl Microphone {
    pub(crate) fn new(queue: Arc<MicQueue>) -> Self {
        Microphone { queue }
    }

    /// The next chunk, waiting for it; `None` once the session has closed and the queue is drained.
    pub async fn recv(&mut self) -> Option<Vec<i16>> {
        loop {
            {
                let mut st = self.queue.lock();
                if let Some(chunk) = st.chunks.pop_front() {
                    return Some(chunk);
                }
                if st.closed {
                    return None;
                }
            }
            // notify_one keeps a permit if nobody waits yet, so a push between the check and here is not lost.
            self.queue.notify.notified().await;
        }
    }

    /// The next chunk if one is waiting.
    pub fn try_recv(&mut self) -> Option<Vec<i16>> {
        self.queue.lock().chunks.pop_front()
    }

    /// Chunks dropped so far because this reader was more than a second behind.
    pub fn dropped(&self) -> u64 {
        self.queue.lock().dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u64) -> ViewerId {
        ViewerId(n)
    }

    #[test]
    fn single_talker_passes_through_at_real_time() {
        let mut m = Mixer::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        for i in 0..10 {
            let now = t0 + Duration::from_millis(20 * i);
            out.extend(m.push(now, v(1), &[100; 960 / 3]));
        }
        assert_eq!(out.len(), 10);
        assert!(out.iter().flatten().all(|&s| s == 100));
    }

    #[test]
    fn two_talkers_are_summed_and_stay_in_step() {
        let mut m = Mixer::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        for i in 0..50 {
            let now = t0 + Duration::from_millis(20 * i);
            out.extend(m.push(now, v(1), &[1000; API_FRAME]));
            out.extend(m.push(now + Duration::from_millis(3), v(2), &[-300; API_FRAME]));
        }
        // One chunk per 20 ms, not one per source. The first went out before viewer 2 had ever been heard;
        // from then on the mix waits for both.
        assert_eq!(out.len(), 50);
        assert!(out[0].iter().all(|&s| s == 1000));
        assert!(out[1..].iter().flatten().all(|&s| s == 700));
    }

    #[test]
    fn mixing_saturates() {
        let mut m = Mixer::default();
        let now = Instant::now();
        // Viewer 2 is known (its first packet decoded to nothing yet), so the mix waits for it.
        assert!(m.push(now, v(2), &[]).is_empty());
        assert!(m.push(now, v(1), &[30_000; API_FRAME]).is_empty());
        let out = m.push(now, v(2), &[30_000; API_FRAME]);
        assert_eq!(out, vec![vec![i16::MAX; API_FRAME]]);
    }

    #[test]
    fn a_silent_source_does_not_hold_the_mix() {
        let mut m = Mixer::default();
        let t0 = Instant::now();
        // Viewer 2 sent once, then stopped (muted).
        m.push(t0, v(2), &[5; 10]);
        let mut out = Vec::new();
        for i in 0..20 {
            out.extend(m.push(t0 + Duration::from_millis(20 * i), v(1), &[1; API_FRAME]));
        }
        // At most the 60 ms jitter allowance is held back while viewer 2 still counted as active.
        assert!(out.len() >= 17, "{}", out.len());
    }

    #[test]
    fn queue_drops_oldest_and_ends_when_closed() {
        let q = Arc::new(MicQueue::default());
        let mut mic = Microphone::new(q.clone());
        for i in 0..(QUEUE_CHUNKS as i16 + 5) {
            q.push(vec![i; 4]);
        }
        assert_eq!(mic.dropped(), 5);
        assert_eq!(mic.try_recv().unwrap()[0], 5);
        q.close();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let n = rt.block_on(async {
            let mut n = 0;
            while mic.recv().await.is_some() {
                n += 1;
            }
            n
        });
        assert_eq!(n, QUEUE_CHUNKS - 1);
    }

    #[test]
    fn recv_wakes_on_push_from_another_thread() {
        let q = Arc::new(MicQueue::default());
        let mut mic = Microphone::new(q.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let pusher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            q.push(vec![7; API_FRAME]);
        });
        let got =
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), mic.recv()).await });
        pusher.join().unwrap();
        assert_eq!(got.unwrap().unwrap()[0], 7);
    }
}
