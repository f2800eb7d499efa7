//! Money writes of live time, in batches: a checkpoint settles every live session's time since
//! its last one in one transaction (a few statements, whatever the number of sessions), and a
//! batch of endings settles each one's last seconds and releases what it held in one transaction.
//! A session's `billed_seconds` is set to an absolute total, only upward, and only while the
//! session has not ended, so a retried or late write can neither double-bill nor bill an ended
//! session; the account is debited by exactly what the session rows gained.

use std::collections::HashMap;

use sea_orm::sea_query::{CaseStatement, Expr, ExprTrait, Query};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::entities::{account, link, session, usage};
use super::{now_ms, Store, StoreResult};
use crate::domain::session::SessionState;

/// A live session's billable total so far, in whole seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct BillLine {
    pub session_id: String,
    pub account_id: String,
    pub total_seconds: i64,
}

/// An ending to write: the session's final total, and how it ended.
#[derive(Debug, Clone)]
pub struct FinalLine {
    pub session_id: String,
    pub account_id: String,
    pub link_id: Option<String>,
    /// The live time to bill in all, or `None` for a session that never went live.
    pub total_seconds: Option<i64>,
    pub state: SessionState,
    pub end_reason: &'static str,
    pub failure_reason: Option<String>,
    /// Give the link use back too (the session never started: nothing may stay held).
    pub refund_link: bool,
    /// When it ended (ms since the epoch): the row's `ended_at`.
    pub ended_at: i64,
}

/// What one settlement did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Settled {
    /// Seconds debited, per session (only sessions whose total grew).
    pub debited: HashMap<String, i64>,
    /// Balance left per account touched, in milliseconds.
    pub balances: HashMap<String, i64>,
    /// Sessions this call ended (an ending already written is not in it).
    pub ended: Vec<String>,
    /// Sessions a checkpoint found already ended by someone else (another node that took this
    /// one for lost): nothing more is billed for them, and their actors here should stop.
    pub ended_elsewhere: Vec<String>,
}

/// SQLite allows 32,766 bound values a statement; stay far below, for PostgreSQL's planner too.
const CHUNK: usize = 400;

impl Store {
    /// Settles every line's total in one transaction: session totals raised, one ledger line per
    /// session that gained, one debit per account.
    pub async fn settle(&self, lines: &[BillLine]) -> StoreResult<Settled> {
        super::guarded(async move {
            let _turn = self.write_turn().await;
            let txn = self.begin_write().await?;
            let mut settled = Settled::default();
            let (gained, ended_elsewhere) = raise_totals(&txn, lines).await?;
            settled.ended_elsewhere = ended_elsewhere;
            debit(&txn, &gained, "session time", &mut settled).await?;
            // Every account's balance, debited or not: the actor projects from them.
            let mut ids: Vec<&str> = lines.iter().map(|l| l.account_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            for chunk in ids.chunks(CHUNK) {
                for row in account::Entity::find()
                    .filter(account::Column::Id.is_in(chunk.to_vec()))
                    .all(&txn)
                    .await?
                {
                    settled.balances.insert(row.id, row.balance_ms);
                }
            }
            txn.commit().await?;
            settled.debited = gained.into_iter().map(|(s, (_, n))| (s, n)).collect();
            Ok(settled)
        })
        .await
    }

    /// Writes a batch of endings in one transaction: each session's last seconds billed, its row
    /// ended, its concurrency count (and, for a start that never went live, its link use) given
    /// back. A session already ended is left as it is, so a retried batch changes nothing twice.
    pub async fn finish_many(&self, endings: &[FinalLine]) -> StoreResult<Settled> {
        super::guarded(async move {
            let _turn = self.write_turn().await;
            let txn = self.begin_write().await?;
            let mut settled = Settled::default();
            let lines: Vec<BillLine> = endings
                .iter()
                .filter_map(|e| {
                    e.total_seconds.map(|total| BillLine {
                        session_id: e.session_id.clone(),
                        account_id: e.account_id.clone(),
                        total_seconds: total,
                    })
                })
                .collect();
            let (gained, _) = raise_totals(&txn, &lines).await?;
            debit(&txn, &gained, "session time (final)", &mut settled).await?;
            let now = now_ms();
            let mut released: HashMap<&str, i64> = HashMap::new();
            for e in endings {
                let ended = session::Entity::update_many()
                    .col_expr(session::Column::State, Expr::value(e.state))
                    .col_expr(session::Column::EndReason, Expr::value(e.end_reason))
                    .col_expr(
                        session::Column::FailureReason,
                        Expr::value(e.failure_reason.clone()),
                    )
                    .col_expr(session::Column::EndedAt, Expr::value(e.ended_at))
                    .col_expr(session::Column::UpdatedAt, Expr::value(now))
                    .filter(session::Column::Id.eq(e.session_id.as_str()))
                    .filter(session::Column::EndedAt.is_null())
                    .exec(&txn)
                    .await?;
                if ended.rows_affected == 0 {
                    continue;
                }
                settled.ended.push(e.session_id.clone());
                *released.entry(&e.account_id).or_default() += 1;
                if let (true, Some(link_id)) = (e.refund_link, &e.link_id) {
                    link::Entity::update_many()
                        .col_expr(link::Column::Uses, Expr::col(link::Column::Uses).sub(1))
                        .filter(link::Column::Id.eq(link_id.as_str()))
                        .filter(link::Column::Uses.gt(0))
                        .exec(&txn)
                        .await?;
                }
            }
            for (account_id, n) in released {
                let live = Expr::col(account::Column::LiveSessions);
                account::Entity::update_many()
                    .col_expr(
                        account::Column::LiveSessions,
                        Expr::case(live.clone().gt(n), live.sub(n))
                            .finally(0i64)
                            .into(),
                    )
                    .filter(account::Column::Id.eq(account_id))
                    .exec(&txn)
                    .await?;
            }
            txn.commit().await?;
            settled.debited = gained.into_iter().map(|(s, (_, n))| (s, n)).collect();
            Ok(settled)
        })
        .await
    }
}

/// Raises each session's `billed_seconds` to its line's total (never lowers it, never touches an
/// ended session) and refreshes the heartbeat of every one not ended, grown or not (the other
/// nodes take a session whose heartbeat went stale for lost). Answers what each gained: session →
/// (account, seconds), and the lines whose session is already ended (nothing is billed for those).
async fn raise_totals(
    db: &impl ConnectionTrait,
    lines: &[BillLine],
) -> StoreResult<(HashMap<String, (String, i64)>, Vec<String>)> {
    let mut gained = HashMap::new();
    let mut ended = Vec::new();
    for chunk in lines.chunks(CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(|l| l.session_id.as_str()).collect();
        // What the rows say now: the gain is measured against them, inside this transaction.
        let before: HashMap<String, i64> = session::Entity::find()
            .filter(session::Column::Id.is_in(ids.clone()))
            .filter(session::Column::EndedAt.is_null())
            .all(db)
            .await?
            .into_iter()
            .map(|row| (row.id, row.billed_seconds))
            .collect();
        ended.extend(
            chunk
                .iter()
                .filter(|l| !before.contains_key(&l.session_id))
                .map(|l| l.session_id.clone()),
        );
        let grow: Vec<&BillLine> = chunk
            .iter()
            .filter(|l| {
                before
                    .get(&l.session_id)
                    .is_some_and(|b| l.total_seconds > *b)
            })
            .collect();
        if before.is_empty() {
            continue;
        }
        let mut update = Query::update();
        update
            .table(session::Entity)
            .value(session::Column::HeartbeatAt, now_ms())
            .and_where(Expr::col(session::Column::Id).is_in(before.keys().map(String::as_str)))
            .and_where(Expr::col(session::Column::EndedAt).is_null());
        if !grow.is_empty() {
            let mut total = CaseStatement::new();
            for l in &grow {
                total = total.case(
                    Expr::col(session::Column::Id).eq(l.session_id.as_str()),
                    Expr::val(l.total_seconds),
                );
            }
            let total = total.finally(Expr::col(session::Column::BilledSeconds));
            update.value(session::Column::BilledSeconds, total);
        }
        db.execute(&update).await?;
        for l in grow {
            let was = before[&l.session_id];
            gained.insert(
                l.session_id.clone(),
                (l.account_id.clone(), l.total_seconds - was),
            );
        }
    }
    Ok((gained, ended))
}

/// One ledger line per session that gained (a multi-row insert), one debit per account.
async fn debit(
    db: &impl ConnectionTrait,
    gained: &HashMap<String, (String, i64)>,
    reason: &str,
    settled: &mut Settled,
) -> StoreResult<()> {
    if gained.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let mut per_account: HashMap<&str, i64> = HashMap::new();
    let rows: Vec<usage::ActiveModel> = gained
        .iter()
        .map(|(session_id, (account_id, seconds))| {
            *per_account.entry(account_id).or_default() += seconds;
            usage::ActiveModel {
                account_id: Set(account_id.clone()),
                session_id: Set(Some(session_id.clone())),
                agent_id: Set(None),
                kind: Set("seconds".into()),
                amount: Set(-seconds),
                reason: Set(reason.to_string()),
                created_at: Set(now),
                ..Default::default()
            }
        })
        .collect();
    for chunk in rows.chunks(CHUNK) {
        usage::Entity::insert_many(chunk.to_vec()).exec(db).await?;
    }
    let accounts: Vec<(&str, i64)> = per_account.into_iter().collect();
    for chunk in accounts.chunks(CHUNK) {
        let mut balance = CaseStatement::new();
        for (account_id, seconds) in chunk {
            let debit = seconds * 1000;
            balance = balance.case(
                Expr::col(account::Column::Id).eq(*account_id),
                Expr::case(
                    Expr::col(account::Column::BalanceMs).gt(debit),
                    Expr::col(account::Column::BalanceMs).sub(debit),
                )
                .finally(0i64),
            );
        }
        let ids: Vec<&str> = chunk.iter().map(|(a, _)| *a).collect();
        let update = Query::update()
            .table(account::Entity)
            .value(
                account::Column::BalanceMs,
                balance.finally(Expr::col(account::Column::BalanceMs)),
            )
            .and_where(Expr::col(account::Column::Id).is_in(ids.clone()))
            .to_owned();
        db.execute(&update).await?;
        for row in account::Entity::find()
            .filter(account::Column::Id.is_in(ids))
            .all(db)
            .await?
        {
            settled.balances.insert(row.id, row.balance_ms);
        }
    }
    Ok(())
}
