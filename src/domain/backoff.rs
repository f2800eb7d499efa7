//! The one retry schedule every retry uses (a child's restart, a webhook delivery, a billing
//! write, a notice to an agent, an ElevenLabs reconnect): doubling from `initial`, capped at `max`.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The wait after `failures` failures in a row (1 or more; 0 reads as 1): `initial · 2^(failures-1)`,
    /// at most `max`.
    pub fn after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// As `after`, scaled into its upper half by `jitter` ∈ [0, 1): retries of many clients
    /// spread out instead of arriving together.
    pub fn jittered(&self, failures: u32, jitter: f64) -> Duration {
        self.after(failures)
            .mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn doubles_from_the_first_failure_to_the_cap() {
        let b = Backoff::new(MS(100), MS(1_000));
        let waits: Vec<_> = (0..=6).map(|n| b.after(n)).collect();
        assert_eq!(
            waits,
            [
                MS(100),
                MS(100),
                MS(200),
                MS(400),
                MS(800),
                MS(1_000),
                MS(1_000)
            ]
        );
        assert_eq!(b.after(u32::MAX), MS(1_000), "no overflow");
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let b = Backoff::new(MS(100), MS(1_000));
        assert_eq!(b.jittered(3, 0.0), MS(200));
        assert_eq!(b.jittered(3, 1.0), MS(400));
        assert_eq!(b.jittered(3, 7.0), MS(400), "clamped");
    }
}
