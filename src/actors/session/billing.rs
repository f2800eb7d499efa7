//! A live session's time, as billing sees it: the session registers with the `Billing` actor when
//! it goes live (which settles every session's time in batches, and its last seconds at the end),
//! and hears back when the account's minutes run low or out.

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::messages::{EndReason, SessionEvent};
use super::Session;
use crate::actors::billing::{BillingNotice, Track};

impl Session {
    /// From now on the session is billed, or from `since_ms` (ms since the epoch) when the row
    /// says it went live earlier (admitted `live`).
    pub(super) fn start_billing(&mut self, ctx: &mut Context<Self>, since_ms: Option<i64>) {
        let now_ms = crate::domain::time::now_ms();
        let live_at_ms = since_ms.map_or(now_ms, |since| since.min(now_ms));
        let ago = Duration::from_millis((now_ms - live_at_ms) as u64);
        let live_since = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
        self.billing.live_since = Some(live_since);
        self.billing.live_at_ms = Some(live_at_ms);
        self.deps.billing.do_send(Track {
            session_id: self.row.id.clone(),
            account_id: self.row.account_id.clone(),
            live_since,
            notify: ctx.address().recipient(),
        });
    }

    /// Whole seconds live so far (what the status shows; billing settles the same count).
    pub(super) fn live_seconds(&self) -> i64 {
        self.billing
            .live_since
            .map_or(0, |t| t.elapsed().as_secs() as i64)
    }
}

impl Handler<BillingNotice> for Session {
    type Result = ();

    fn handle(&mut self, notice: BillingNotice, ctx: &mut Self::Context) {
        match notice {
            BillingNotice::Exhausted => self.end(ctx, EndReason::MinutesExhausted, None),
            BillingNotice::EndedElsewhere => self.end(ctx, EndReason::NodeLost, None),
            BillingNotice::MinutesLow { seconds_remaining } => {
                if !std::mem::replace(&mut self.billing.minutes_low_sent, true) {
                    self.emit(SessionEvent::MinutesLow {
                        session_id: self.row.id.clone(),
                        seconds_remaining,
                    });
                }
            }
        }
    }
}
