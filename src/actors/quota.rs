//! The Quota actor: the only place that says yes or no to a session. Its answers come from
//! conditional writes in the database, so it never grants what the database has not, and several
//! nodes sharing PostgreSQL cannot overrun a limit. (Billing and releasing are the `Billing`
//! actor's.)

use actix::prelude::*;

use crate::metrics::Metrics;
use crate::store::entities::session;
use crate::store::sessions::{Admission, DurationCap};
use crate::store::{Store, StoreError};

/// Admit a new session row (state `queued`): link use, concurrency slot and row, all or nothing.
#[derive(Message)]
#[rtype(result = "Result<Admission, StoreError>")]
pub struct Admit(pub session::Model, pub DurationCap);

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

    fn handle(&mut self, Admit(row, cap): Admit, _: &mut Self::Context) -> Self::Result {
        self.metrics.actor_message("quota", "admit");
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let source = row.source.clone();
            let admission = store.admit(row, cap).await?;
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
                Admission::ConcurrencyLimit(_) => metrics
                    .admissions_rejected
                    .with_label_values(&["concurrency_limit"])
                    .inc(),
                Admission::AccountGone => metrics
                    .admissions_rejected
                    .with_label_values(&["account_gone"])
                    .inc(),
            }
            Ok(admission)
        })
    }
}
