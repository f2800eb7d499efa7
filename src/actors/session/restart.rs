//! When a child dies, restart it with backoff, at most `max_restarts` times within `window`;
//! past that, escalate (the session fails).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::domain::backoff::Backoff;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Restart { after: Duration },
    Escalate,
}

#[derive(Debug, Clone)]
pub struct RestartPolicy {
    max_restarts: u32,
    window: Duration,
    base_backoff: Duration,
    max_backoff: Duration,
    recent: VecDeque<Instant>,
}

impl RestartPolicy {
    pub fn new(max_restarts: u32, window: Duration) -> Self {
        Self {
            max_restarts,
            window,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            recent: VecDeque::new(),
        }
    }

    /// Records a failure at `now` and decides.
    pub fn on_failure(&mut self, now: Instant) -> Decision {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() as u32 >= self.max_restarts {
            return Decision::Escalate;
        }
        let after =
            Backoff::new(self.base_backoff, self.max_backoff).after(self.recent.len() as u32 + 1);
        self.recent.push_back(now);
        Decision::Restart { after }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_with_growing_backoff_then_escalates() {
        let mut p = RestartPolicy::new(3, Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(
            p.on_failure(t),
            Decision::Restart {
                after: Duration::from_millis(100)
            }
        );
        assert_eq!(
            p.on_failure(t),
            Decision::Restart {
                after: Duration::from_millis(200)
            }
        );
        assert_eq!(
            p.on_failure(t),
            Decision::Restart {
                after: Duration::from_millis(400)
            }
        );
        assert_eq!(p.on_failure(t), Decision::Escalate);
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let mut p = RestartPolicy::new(1, Duration::from_secs(10));
        let t = Instant::now();
        assert!(matches!(p.on_failure(t), Decision::Restart { .. }));
        assert_eq!(p.on_failure(t + Duration::from_secs(5)), Decision::Escalate);
        assert!(matches!(
            p.on_failure(t + Duration::from_secs(11)),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn zero_restarts_escalates_at_once() {
        let mut p = RestartPolicy::new(0, Duration::from_secs(10));
        assert_eq!(p.on_failure(Instant::now()), Decision::Escalate);
    }

    #[test]
    fn backoff_is_capped() {
        let mut p = RestartPolicy::new(100, Duration::from_secs(600));
        let t = Instant::now();
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            if let Decision::Restart { after } = p.on_failure(t) {
                last = after;
            }
        }
        assert_eq!(last, Duration::from_secs(5));
    }
}
