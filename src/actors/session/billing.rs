//! A live session's time, billed as it passes: one second per second, and a warning to channel
//! clients when the account's minutes run low. At zero balance the session ends itself.

use actix::prelude::*;

use super::messages::{EndReason, SessionEvent};
use super::Session;
use crate::actors::quota::Bill;

/// Balance below which channel clients hear `minutes_low`.
const MINUTES_LOW_MS: i64 = 60_000;

impl Session {
    pub(super) fn bill_tick(&mut self, ctx: &mut Context<Self>) {
        if self.ending {
            return;
        }
        self.billing.billed_seconds += 1;
        let bill = Bill {
            account_id: self.row.account_id.clone(),
            session_id: self.row.id.clone(),
            seconds: 1,
        };
        ctx.spawn(
            self.deps
                .quota
                .send(bill)
                .into_actor(self)
                .map(|reply, act, ctx| match reply {
                    Ok(Ok(balance_ms)) if balance_ms <= 0 => {
                        act.end(ctx, EndReason::MinutesExhausted, None)
                    }
                    Ok(Ok(balance_ms)) => act.warn_if_low(balance_ms),
                    Ok(Err(e)) => {
                        tracing::error!(session = %act.row.id, error = %e, "billing failed")
                    }
                    Err(e) => {
                        tracing::error!(session = %act.row.id, error = %e, "quota unreachable")
                    }
                }),
        );
    }

    fn warn_if_low(&mut self, balance_ms: i64) {
        if balance_ms < MINUTES_LOW_MS && !self.billing.minutes_low_sent {
            self.billing.minutes_low_sent = true;
            self.emit(SessionEvent::MinutesLow {
                session_id: self.row.id.clone(),
                seconds_remaining: balance_ms / 1000,
            });
        }
    }

    /// The seconds not billed yet when the session ends (its last part-second rounded), counted
    /// as billed from here on.
    pub(super) fn take_final_seconds(&mut self) -> i64 {
        let final_seconds = self
            .billing
            .live_since
            .map(|t| {
                (t.elapsed().as_secs_f64().round() as i64 - self.billing.billed_seconds).max(0)
            })
            .unwrap_or(0);
        self.billing.billed_seconds += final_seconds;
        final_seconds
    }
}
