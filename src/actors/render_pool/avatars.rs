//! The prepared avatars (a base frame per agent's avatar and aspect ratio), shared by every session
//! that renders one, and kept warm a while after the last of them ends: a node whose sessions come
//! and go one at a time would otherwise read, decode and prepare the same portrait at every start
//! (on a 2-core node that work was most of an idle start's time). Starts that arrive while one is
//! being prepared wait for it rather than preparing it again.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::future::{LocalBoxFuture, Shared};

use super::error::RenderError;
use crate::media::render::Prepared;

/// The model asset and the aspect ratio.
pub(super) type Key = (String, String);

pub(super) type Loading = Shared<LocalBoxFuture<'static, Result<Arc<Prepared>, RenderError>>>;

/// How many avatars stay prepared with no session using them, and for how long.
const WARM: usize = 8;
const KEEP: Duration = Duration::from_secs(600);

#[derive(Default)]
pub(super) struct Avatars {
    /// Every prepared avatar some session (or the warm list) still holds.
    shared: HashMap<Key, Weak<Prepared>>,
    /// The most recently used, held for `KEEP` after their last use; newest last.
    warm: Vec<(Key, Arc<Prepared>, Instant)>,
    /// Being prepared now.
    loading: HashMap<Key, Loading>,
}

impl Avatars {
    /// The prepared avatar, if any session or the warm list holds it; a hit counts as a use.
    pub(super) fn get(&mut self, key: &Key) -> Option<Arc<Prepared>> {
        let prepared = self.shared.get(key).and_then(Weak::upgrade)?;
        self.keep(key, &prepared);
        Some(prepared)
    }

    pub(super) fn loading(&self, key: &Key) -> Option<Loading> {
        self.loading.get(key).cloned()
    }

    pub(super) fn start_loading(&mut self, key: Key, loading: Loading) {
        self.loading.insert(key, loading);
    }

    /// A preparation is done (whoever of its waiters gets here first); `Err` is not kept, so the
    /// next start tries again.
    pub(super) fn done(&mut self, key: &Key, result: &Result<Arc<Prepared>, RenderError>) {
        self.loading.remove(key);
        if let Ok(prepared) = result {
            self.shared.insert(key.clone(), Arc::downgrade(prepared));
            self.keep(key, prepared);
        }
    }

    fn keep(&mut self, key: &Key, prepared: &Arc<Prepared>) {
        let now = Instant::now();
        self.warm
            .retain(|(k, _, used)| k != key && now - *used < KEEP);
        self.warm.push((key.clone(), prepared.clone(), now));
        if self.warm.len() > WARM {
            self.warm.remove(0);
        }
        self.shared.retain(|_, weak| weak.strong_count() > 0);
    }

    /// How many are held with no session using them (for tests and the log).
    #[cfg(test)]
    fn warm(&self) -> usize {
        self.warm.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared() -> Arc<Prepared> {
        let img = image::RgbImage::from_pixel(64, 64, image::Rgb([200, 170, 150]));
        let face = crate::media::face::Face {
            x: 16.0,
            y: 12.0,
            w: 32.0,
            h: 40.0,
            score: 0.9,
            landmarks: [
                [26.0, 26.0],
                [38.0, 26.0],
                [32.0, 32.0],
                [27.0, 42.0],
                [37.0, 42.0],
            ],
        };
        let (model, crop) = crate::media::avatar::build(&img, &face, "1:1", 64);
        Arc::new(Prepared::new(model, crop))
    }

    fn key(n: usize) -> Key {
        (format!("asset_{n}"), "1:1".into())
    }

    #[test]
    fn an_avatar_outlives_its_last_session() {
        let mut avatars = Avatars::default();
        let session = prepared();
        avatars.done(&key(1), &Ok(session.clone()));
        drop(session);
        assert!(avatars.get(&key(1)).is_some(), "kept warm");
    }

    #[test]
    fn only_the_most_recent_stay_warm() {
        let mut avatars = Avatars::default();
        for n in 0..WARM + 3 {
            avatars.done(&key(n), &Ok(prepared()));
        }
        assert_eq!(avatars.warm(), WARM);
        assert!(avatars.get(&key(0)).is_none(), "the oldest let go");
        assert!(avatars.get(&key(WARM + 2)).is_some());
    }

    #[test]
    fn one_in_use_stays_shared_beyond_the_warm_list() {
        let mut avatars = Avatars::default();
        let held = prepared();
        avatars.done(&key(0), &Ok(held.clone()));
        for n in 1..=WARM {
            avatars.done(&key(n), &Ok(prepared()));
        }
        let again = avatars.get(&key(0)).expect("a session still holds it");
        assert!(Arc::ptr_eq(&held, &again));
    }

    #[test]
    fn a_failure_is_not_kept() {
        let mut avatars = Avatars::default();
        avatars.done(&key(0), &Err(RenderError::Avatar("bad".into())));
        assert!(avatars.get(&key(0)).is_none());
    }
}
