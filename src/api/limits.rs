//! Rate limits of the unauthenticated and expensive routes (link start-session, public connect,
//! its CORS preflight, agent generation): per client IP, and per link, agent or account, as
//! settings (`[limits]`, requests per minute; 0 = no limit). A refused request is answered 429
//! `rate_limited` with `retry_after_seconds` before it costs a database read or write.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix_web::HttpRequest;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::error::{ApiError, ApiResult};
use crate::config::LimitSettings;
use crate::metrics::Metrics;

/// The routes that are limited, each with its own budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limited {
    LinkStart,
    Connect,
    Preflight,
    Generate,
}

impl Limited {
    fn as_str(self) -> &'static str {
        match self {
            Limited::LinkStart => "link_start",
            Limited::Connect => "connect",
            Limited::Preflight => "preflight",
            Limited::Generate => "generate",
        }
    }
}

struct Limiter<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(per_minute: u32) -> Option<Self> {
        let n = NonZeroU32::new(per_minute)?;
        Some(Self {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_minute(n)),
        })
    }

    /// `Err(seconds to wait)` when `key` is over its budget.
    fn check(&self, key: &K) -> Result<(), u64> {
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    fn tidy(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[derive(Clone)]
pub struct RateLimits {
    by_ip: Arc<HashMap<Limited, Limiter<IpAddr>>>,
    by_key: Arc<HashMap<Limited, Limiter<String>>>,
    trust_forwarded_for: bool,
    checks: Arc<AtomicU64>,
    metrics: Metrics,
}

impl RateLimits {
    pub fn new(settings: &LimitSettings, metrics: Metrics) -> Self {
        let pairs = [
            (
                Limited::LinkStart,
                settings.link_start_per_ip,
                settings.link_start_per_link,
            ),
            (
                Limited::Connect,
                settings.connect_per_ip,
                settings.connect_per_agent,
            ),
            (Limited::Preflight, settings.preflight_per_ip, 0),
            (
                Limited::Generate,
                settings.generate_per_ip,
                settings.generate_per_account,
            ),
        ];
        let mut by_ip = HashMap::new();
        let mut by_key = HashMap::new();
        for (route, ip, key) in pairs {
            if let Some(l) = Limiter::new(ip) {
                by_ip.insert(route, l);
            }
            if let Some(l) = Limiter::new(key) {
                by_key.insert(route, l);
            }
        }
        Self {
            by_ip: Arc::new(by_ip),
            by_key: Arc::new(by_key),
            trust_forwarded_for: settings.trust_forwarded_for,
            checks: Arc::new(AtomicU64::new(0)),
            metrics,
        }
    }

    /// The client's address: the peer, or (behind a trusted proxy) the first `X-Forwarded-For`.
    fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        if self.trust_forwarded_for {
            let forwarded = req
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok());
            if forwarded.is_some() {
                return forwarded;
            }
        }
        req.peer_addr().map(|a| a.ip())
    }

    fn refused(&self, route: Limited, by: &str, retry_after: u64) -> ApiError {
        self.metrics
            .rate_limited
            .with_label_values(&[route.as_str(), by])
            .inc();
        ApiError::too_many(
            "rate_limited",
            "Too many requests; slow down and try again shortly.",
            retry_after,
        )
    }

    fn counted(&self) {
        // Forget idle clients now and then, so the tables stay as small as the active set.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.by_ip.values().for_each(Limiter::tidy);
            self.by_key.values().for_each(Limiter::tidy);
        }
    }

    /// The request's client may call `route` now.
    pub fn check_ip(&self, route: Limited, req: &HttpRequest) -> ApiResult<()> {
        self.counted();
        let (Some(limiter), Some(ip)) = (self.by_ip.get(&route), self.client_ip(req)) else {
            return Ok(());
        };
        limiter
            .check(&ip)
            .map_err(|wait| self.refused(route, "ip", wait))
    }

    /// `key` (a link, an agent, an account) may be used on `route` now.
    pub fn check_key(&self, route: Limited, key: &str) -> ApiResult<()> {
        let Some(limiter) = self.by_key.get(&route) else {
            return Ok(());
        };
        limiter
            .check(&key.to_string())
            .map_err(|wait| self.refused(route, "key", wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refuses_with_a_wait_and_keys_are_apart() {
        let l = Limiter::new(2).unwrap();
        assert!(l.check(&"a".to_string()).is_ok());
        assert!(l.check(&"a".to_string()).is_ok());
        let wait = l.check(&"a".to_string()).unwrap_err();
        assert!((1..=30).contains(&wait), "{wait}");
        assert!(
            l.check(&"b".to_string()).is_ok(),
            "another key has its own budget"
        );
        assert!(Limiter::<String>::new(0).is_none(), "0 means no limit");
    }
}
