//! The Billing actor: the one place live time becomes money, and the one writer of a session's
//! end. Its cost grows with time, not with sessions × seconds:
//! - Live sessions are tracked in memory. Every second the actor projects each account's balance
//!   (no database); every `billing.checkpoint_seconds`, or at once when a projection reaches
//!   zero, it settles every tracked session's time in one transaction (`Store::settle`).
//! - An ending (`Finish`) is queued and written with the others that came meanwhile in one
//!   transaction (`Store::finish_many`): the last part-second billed (rounded), the row ended, the
//!   concurrency count and, for a start that never went live, the link use given back.
//! - Totals are absolute and only raised, so a write retried after an error bills nothing twice;
//!   while the database is down, nothing is dropped: checkpoints and endings wait in memory and are
//!   written when it is back.
//! - An account whose balance reaches zero has its sessions told (`Exhausted`); under a minute
//!   left, `MinutesLow`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::config::BillingSettings;
use crate::domain::backoff::Backoff;
use crate::metrics::Metrics;
use crate::store::billing::{BillLine, FinalLine, Settled};
use crate::store::entities::session;
use crate::store::Store;

/// Balance below which sessions hear `MinutesLow`.
const MINUTES_LOW_MS: i64 = 60_000;
/// Endings written in one transaction at most.
const MAX_BATCH: usize = 1_000;
/// How long a `Finish` waits for its write before answering anyway (the write goes on).
const FINISH_WAIT: Duration = Duration::from_secs(10);

/// What billing tells a session.
#[derive(Message, Debug, Clone, PartialEq)]
#[rtype(result = "()")]
pub enum BillingNotice {
    MinutesLow {
        seconds_remaining: i64,
    },
    /// The account has no minutes left: the session ends (`minutes_exhausted`).
    Exhausted,
    /// Another node took this one for lost and ended the session's row (`node_lost`): it stops
    /// here without writing or announcing anything more.
    EndedElsewhere,
}

/// A session went live: bill it from `live_since`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Track {
    pub session_id: String,
    pub account_id: String,
    pub live_since: Instant,
    pub notify: Recipient<BillingNotice>,
}

/// A session ended: bill its last seconds and write its end. Resolves once written (or after a
/// bound, if the database is down: the write then happens when it is back).
#[derive(Message)]
#[rtype(result = "Option<session::Model>")]
pub struct Finish {
    pub line: FinalLine,
    /// When it went live, if it did (ms since the epoch, the row's `started_at`): its total is
    /// the time from there to `line.ended_at`, rounded to the second.
    pub live_at_ms: Option<i64>,
}

struct Tracked {
    account_id: String,
    live_since: Instant,
    /// The total the database has.
    billed: i64,
    notify: Recipient<BillingNotice>,
    low_sent: bool,
}

struct AccountView {
    /// The balance after the last settlement, and when that was.
    balance_ms: i64,
    settled_at: Instant,
    /// Its sessions are told to end at the instant the projected balance reaches zero.
    exhaust_scheduled: bool,
}

struct Ending {
    line: FinalLine,
    /// Told the ended row as written (`None` if it was ended already).
    waiters: Vec<oneshot::Sender<Option<session::Model>>>,
}

pub struct Billing {
    store: Store,
    metrics: Metrics,
    settings: BillingSettings,
    tracked: HashMap<String, Tracked>,
    accounts: HashMap<String, AccountView>,
    endings: Vec<Ending>,
    /// A write is in flight: the next waits (one writer keeps totals and endings in order).
    writing: bool,
    last_checkpoint: Instant,
    /// A checkpoint is owed (an account ran dry, one was asked for): taken at the next turn.
    checkpoint_due: bool,
    /// Consecutive failed writes, for backoff.
    failures: u32,
}

impl Billing {
    pub fn new(store: Store, metrics: Metrics, settings: BillingSettings) -> Self {
        Self {
            store,
            metrics,
            settings,
            tracked: HashMap::new(),
            accounts: HashMap::new(),
            endings: Vec::new(),
            writing: false,
            last_checkpoint: Instant::now(),
            checkpoint_due: false,
            failures: 0,
        }
    }

    fn total_seconds(live_since: Instant, at: Instant) -> i64 {
        at.saturating_duration_since(live_since).as_secs() as i64
    }

    /// Every second: projects balances without the database, warns and settles as they require.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        // Per account: the time its sessions used since its last settlement, and how many run.
        let mut spent: HashMap<String, (i64, i64)> = HashMap::new();
        for t in self.tracked.values() {
            let since = self
                .accounts
                .get(&t.account_id)
                .map_or(t.live_since, |a| a.settled_at.max(t.live_since));
            let entry = spent.entry(t.account_id.clone()).or_default();
            entry.0 += now.saturating_duration_since(since).as_millis() as i64;
            entry.1 += 1;
        }
        // Accounts with nothing live here are forgotten (their balance is re-read when needed).
        self.accounts.retain(|id, _| spent.contains_key(id));
        let mut dry = false;
        for (account_id, (spent, running)) in spent {
            match self.accounts.get(&account_id) {
                // Not settled yet: its balance comes with the next checkpoint.
                None => dry = true,
                Some(view) => {
                    let projected = view.balance_ms - spent;
                    if projected <= 0 {
                        dry = true;
                    } else if projected < MINUTES_LOW_MS {
                        self.warn_low(account_id.clone(), projected);
                    }
                    // Running out before the next tick: end its sessions at that very instant,
                    // so no second beyond the balance is used.
                    if projected < 2_000 {
                        let at = Duration::from_millis((projected.max(0) / running) as u64);
                        self.exhaust_at(ctx, account_id, at);
                    }
                }
            }
        }
        let interval = Duration::from_secs(self.settings.checkpoint_seconds.max(1));
        if dry || self.checkpoint_due || self.last_checkpoint.elapsed() >= interval {
            self.checkpoint_due = true;
            self.write(ctx);
        }
        let unbilled: i64 = self
            .tracked
            .values()
            .map(|t| (Self::total_seconds(t.live_since, now) - t.billed).max(0))
            .sum();
        self.metrics.billing_unbilled_seconds.set(unbilled);
    }

    fn exhaust_at(&mut self, ctx: &mut Context<Self>, account_id: String, after: Duration) {
        let Some(view) = self.accounts.get_mut(&account_id) else {
            return;
        };
        if std::mem::replace(&mut view.exhaust_scheduled, true) {
            return;
        }
        ctx.run_later(after, move |act, _| {
            for t in act.tracked.values() {
                if t.account_id == account_id {
                    t.notify.do_send(BillingNotice::Exhausted);
                }
            }
        });
    }

    fn warn_low(&mut self, account_id: String, balance_ms: i64) {
        for t in self.tracked.values_mut() {
            if t.account_id == account_id && !t.low_sent {
                t.low_sent = true;
                t.notify.do_send(BillingNotice::MinutesLow {
                    seconds_remaining: balance_ms / 1000,
                });
            }
        }
    }

    /// Starts the next write if none is in flight: endings first (a session waits on them), then
    /// a checkpoint if one is due.
    fn write(&mut self, ctx: &mut Context<Self>) {
        if self.writing {
            return;
        }
        if !self.endings.is_empty() {
            let batch: Vec<Ending> = self
                .endings
                .drain(..self.endings.len().min(MAX_BATCH))
                .collect();
            self.write_endings(ctx, batch);
        } else if self.checkpoint_due {
            self.write_checkpoint(ctx);
        }
    }

    fn write_checkpoint(&mut self, ctx: &mut Context<Self>) {
        self.checkpoint_due = false;
        let now = Instant::now();
        let lines: Vec<BillLine> = self
            .tracked
            .iter()
            .map(|(id, t)| BillLine {
                session_id: id.clone(),
                account_id: t.account_id.clone(),
                total_seconds: Self::total_seconds(t.live_since, now),
            })
            .collect();
        if lines.is_empty() {
            self.last_checkpoint = now;
            return;
        }
        self.writing = true;
        let store = self.store.clone();
        let started = Instant::now();
        ctx.spawn(
            async move { (store.settle(&lines).await, lines) }
                .into_actor(self)
                .map(move |(result, lines), act, ctx| {
                    act.write_done("checkpoint", started);
                    match result {
                        Ok(settled) => {
                            act.failures = 0;
                            act.last_checkpoint = now;
                            for line in &lines {
                                if let Some(t) = act.tracked.get_mut(&line.session_id) {
                                    t.billed = t.billed.max(line.total_seconds);
                                }
                            }
                            act.settled(&settled, now, "checkpoint");
                        }
                        Err(e) => act.failed(ctx, "checkpoint", &e.to_string()),
                    }
                    act.write(ctx);
                }),
        );
    }

    fn write_endings(&mut self, ctx: &mut Context<Self>, batch: Vec<Ending>) {
        self.writing = true;
        let store = self.store.clone();
        let lines: Vec<FinalLine> = batch.iter().map(|e| e.line.clone()).collect();
        let started = Instant::now();
        ctx.spawn(
            async move { store.finish_many(&lines).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    act.write_done("endings", started);
                    match result {
                        Ok(settled) => {
                            act.failures = 0;
                            act.settled(&settled, Instant::now(), "final");
                            for ending in batch {
                                act.tracked.remove(&ending.line.session_id);
                                let row = settled.ended.get(&ending.line.session_id);
                                for waiter in ending.waiters {
                                    let _ = waiter.send(row.cloned());
                                }
                            }
                        }
                        Err(e) => {
                            // Back in line, in order, for the next attempt: nothing is dropped.
                            let mut retry = batch;
                            retry.append(&mut act.endings);
                            act.endings = retry;
                            act.failed(ctx, "endings", &e.to_string());
                        }
                    }
                    act.write(ctx);
                }),
        );
    }

    /// A write came back, whatever its outcome: the next may start; its time is measured.
    fn write_done(&mut self, kind: &str, started: Instant) {
        self.writing = false;
        self.metrics
            .billing_write_seconds
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
    }

    /// A write went through: balances known, sessions of an account that ran dry told so.
    fn settled(&mut self, settled: &Settled, at: Instant, kind: &str) {
        let seconds: i64 = settled.debited.values().sum();
        self.metrics.billed_seconds.inc_by(seconds.max(0) as u64);
        self.metrics
            .billing_settlements
            .with_label_values(&[kind])
            .inc();
        for (account_id, balance_ms) in &settled.balances {
            let scheduled = self
                .accounts
                .get(account_id)
                .is_some_and(|a| a.exhaust_scheduled);
            self.accounts.insert(
                account_id.clone(),
                AccountView {
                    balance_ms: *balance_ms,
                    settled_at: at,
                    exhaust_scheduled: scheduled && *balance_ms > 0,
                },
            );
        }
        for session_id in &settled.ended_elsewhere {
            if let Some(t) = self.tracked.get(session_id) {
                tracing::warn!(session = %session_id, "ended by another node: stopping it here");
                t.notify.do_send(BillingNotice::EndedElsewhere);
            }
        }
        for (account_id, balance_ms) in &settled.balances {
            if *balance_ms <= 0 {
                for t in self.tracked.values() {
                    if &t.account_id == account_id {
                        t.notify.do_send(BillingNotice::Exhausted);
                    }
                }
            }
        }
    }

    fn failed(&mut self, ctx: &mut Context<Self>, what: &'static str, error: &str) {
        self.failures += 1;
        self.metrics
            .billing_failures
            .with_label_values(&[what])
            .inc();
        tracing::error!(%error, attempt = self.failures, "billing {what} not written; kept for the next attempt");
        // Back off (up to 5 s) before the next attempt; the tick also retries.
        let wait = Backoff::new(Duration::from_millis(200), Duration::from_secs(5))
            .after(self.failures + 1);
        self.writing = true;
        ctx.run_later(wait, |act, ctx| {
            act.writing = false;
            act.checkpoint_due = true;
            act.write(ctx);
        });
    }
}

impl Actor for Billing {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every session and every ending of the node comes through here.
        ctx.set_mailbox_capacity(usize::MAX);
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.tick(ctx));
    }
}

impl Handler<Track> for Billing {
    type Result = ();

    fn handle(&mut self, msg: Track, ctx: &mut Self::Context) {
        self.metrics.actor_message("billing", "track");
        let known = self.accounts.contains_key(&msg.account_id);
        self.tracked.insert(
            msg.session_id,
            Tracked {
                account_id: msg.account_id,
                live_since: msg.live_since,
                billed: 0,
                notify: msg.notify,
                low_sent: false,
            },
        );
        if !known {
            // Its balance comes with the next checkpoint; take one soon.
            self.checkpoint_due = true;
            self.write(ctx);
        }
    }
}

impl Handler<Finish> for Billing {
    type Result = ResponseFuture<Option<session::Model>>;

    fn handle(&mut self, mut msg: Finish, ctx: &mut Self::Context) -> Self::Result {
        self.metrics.actor_message("billing", "finish");
        let ended_at = msg.line.ended_at;
        msg.line.total_seconds = msg
            .live_at_ms
            .map(|since| ((ended_at - since).max(0) as f64 / 1000.0).round() as i64);
        let (tx, rx) = oneshot::channel();
        self.endings.push(Ending {
            line: msg.line,
            waiters: vec![tx],
        });
        self.write(ctx);
        Box::pin(async move {
            tokio::time::timeout(FINISH_WAIT, rx)
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
        })
    }
}
