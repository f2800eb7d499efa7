//! The Quota actor: the only place that says yes or no to a session, and the one that bills and
//! releases. Its answers come from conditional writes in the database, so it never grants what the
//! database has not, and several nodes sharing PostgreSQL cannot overrun a limit.

use actix::prelude::*;

use crate::metrics::Metrics;
use crate::store::entities::session;
use crate::store::sessions::{Admission, Ending};
use crate::store::{Store, StoreError};

/// Admit a new session row (state `queued`): link use, concurrency slot and row, all or nothing.
#[derive(Message)]
#[rtype(result = "Result<Admission, StoreError>")]
pub struct Admit(pub session::Model);

/// Debit whole seconds of session time; answers the balance left in milliseconds.
#[derive(Message)]
#[rtype(result = "Result<i64, StoreError>")]
pub struct Bill {
    pub account_id: String,
    pub session_id: String,
    pub seconds: i64,
}

/// The session's final write: releases its slot (and link use) exactly once.
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct Finish {
    pub row: session::Model,
    pub state: &'static str,
    pub end_reason: &'static str,
    pub failure_reason: Option<String>,
    pub refund_link: bool,
}

pub struct Quota {
    store: Store,
    metrics: Metrics,
}

impl Quota {
    pub fn new(store: Store, metrics: Metrics) -> Self {
        Self { store, metrics }
    }
}

impl Actor for Quota {
    type Context = Context<Self>;
}

impl Handler<Admit> for Quota {
    type Result = ResponseFuture<Result<Admission, StoreError>>;

    fn handle(&mut self, Admit(row): Admit, _: &mut Self::Context) -> Self::Result {
        self.metrics.actor_message("quota", "admit");
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let source = row.source.clone();
            let admission = store.admit(row).await?;
            match &admission {
                Admission::Admitted(_) => {
                    metrics.sessions_started.with_label_values(&[&source]).inc()
                }
                Admission::LinkUnavailable => metrics
                    .admissions_rejected
                    .with_label_values(&["link_inactive"])
                    .inc(),
                Admission::InsufficientBalance => metrics
                    .admissions_rejected
                    .with_label_values(&["insufficient_balance"])
                    .inc(),
                Admission::ConcurrencyLimit => metrics
                    .admissions_rejected
                    .with_label_values(&["concurrency_limit"])
                    .inc(),
            }
            Ok(admission)
        })
    }
}

impl Handler<Bill> for Quota {
    type Result = ResponseFuture<Result<i64, StoreError>>;

    fn handle(&mut self, msg: Bill, _: &mut Self::Context) -> Self::Result {
        self.metrics.actor_message("quota", "bill");
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let balance = store
                .bill_seconds(&msg.account_id, &msg.session_id, msg.seconds)
                .await?;
            metrics.billed_seconds.inc_by(msg.seconds as u64);
            Ok(balance)
        })
    }
}

impl Handler<Finish> for Quota {
    type Result = ResponseFuture<Result<bool, StoreError>>;

    fn handle(&mut self, msg: Finish, _: &mut Self::Context) -> Self::Result {
        self.metrics.actor_message("quota", "finish");
        let store = self.store.clone();
        Box::pin(async move {
            let ending = Ending {
                state: msg.state,
                end_reason: msg.end_reason,
                failure_reason: msg.failure_reason.as_deref(),
                refund_link: msg.refund_link,
            };
            store.finish_session(&msg.row, ending).await
        })
    }
}
