//! A live session's time, as billing sees it: the session registers with the `Billing` actor when
//! it goes live (which settles every session's time in batches, and its last seconds at the end),
//! and hears back when the account's minutes run low or out.

use std::time::Instant;

use actix::prelude::*;

use super::messages::{EndReason, SessionEvent};
use super::Session;
use crate::actors::billing::{BillingNotice, Track};

impl Session {
    /// From now on the session is billed.
    pub(super) fn start_billing(&mut self, ctx: &mut Context<Self>, live_since: Instant) {
        self.billing.live_since = Some(live_since);
        self.billing.live_at_ms = Some(crate::domain::time::now_ms());
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
