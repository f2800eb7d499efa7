//! Money writes of live time, in batches: a checkpoint settles every live session's time since
//! its last one in one transaction (a few statements, whatever the number of sessions), and a
//! batch of endings settles each one's last seconds and releases what it held in one transaction.
//! A session's `billed_seconds` is set to an absolute total, only upward, and only while the
//! session has not ended, so a retried or late write can neither double-bill nor bill an ended
//! session; the account is debited by exactly what the session rows gained.

use std::collections::HashMap;

use sea_orm::sea_query::{CaseStatement, Expr, ExprTrait, IntoIden, IntoTableRef, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter,
    QueryResult, QuerySelect, QueryTrait, Statement,
};

use super::entities::{account, link, session, usage};
use super::write::WriteTxn;
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
    /// Sessions this call ended (an ending already written is not in it), each row as the call
    /// left it (ended, billed): what a stop answers.
    pub ended: HashMap<String, session::Model>,
    /// Sessions a checkpoint found already ended by someone else (another node that took this
    /// one for lost): nothing more is billed for them, and their actors here should stop.
    pub ended_elsewhere: Vec<String>,
}

/// SQLite allows 32,766 bound values a statement; stay far below, for PostgreSQL's planner too.
const CHUNK: usize = 400;

impl Store {
    /// Settles every line's total in one transaction: session totals raised, one ledger line per
    /// session that gained, one debit per account. Read, then the writes in one call (see
    /// `store/write.rs`).
    pub async fn settle(&self, lines: &[BillLine]) -> StoreResult<Settled> {
        super::guarded(async move {
            let backend = self.db.get_database_backend();
            let mut txn = self.write_txn().await?;
            let mut settled = Settled::default();
            let ids: Vec<&str> = lines.iter().map(|l| l.session_id.as_str()).collect();
            let before = billed_before(&mut txn, backend, &ids).await?;
            settled.ended_elsewhere = lines
                .iter()
                .filter(|l| !before.contains_key(&l.session_id))
                .map(|l| l.session_id.clone())
                .collect();
            let (mut statements, gained) = raise_totals(backend, lines, &before);
            statements.extend(debit(backend, &gained, "session time"));
            // Every account's balance, debited or not: the actor projects from them.
            let mut accounts: Vec<&str> = lines.iter().map(|l| l.account_id.as_str()).collect();
            accounts.sort_unstable();
            accounts.dedup();
            for chunk in accounts.chunks(CHUNK) {
                let balances = account::Entity::find()
                    .select_only()
                    .columns([account::Column::Id, account::Column::BalanceMs])
                    .filter(account::Column::Id.is_in(chunk.to_vec()));
                statements.push(balances.build(backend));
            }
            let rows = txn.commit_with(statements).await?;
            (settled.balances, settled.ended) = read_back(&rows)?;
            settled.debited = gained.into_iter().map(|(s, (_, n))| (s, n)).collect();
            Ok(settled)
        })
        .await
    }

    /// Writes a batch of endings in one transaction: each session's last seconds billed, its row
    /// ended, its concurrency count (and, for a start that never went live, its link use) given
    /// back. A session already ended is left as it is, so a retried batch changes nothing twice.
    /// Read (the rows not ended, locked on PostgreSQL against another node ending them), then the
    /// writes in one call.
    pub async fn finish_many(&self, endings: &[FinalLine]) -> StoreResult<Settled> {
        super::guarded(async move {
            let backend = self.db.get_database_backend();
            let mut txn = self.write_txn().await?;
            let mut settled = Settled::default();
            let ids: Vec<&str> = endings.iter().map(|e| e.session_id.as_str()).collect();
            let before = billed_before(&mut txn, backend, &ids).await?;
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
            let (mut statements, gained) = raise_totals(backend, &lines, &before);
            statements.extend(debit(backend, &gained, "session time (final)"));
            let ending: Vec<&FinalLine> = endings
                .iter()
                .filter(|e| before.contains_key(&e.session_id))
                .collect();
            statements.extend(end_rows(backend, &ending));
            let rows = txn.commit_with(statements).await?;
            (settled.balances, settled.ended) = read_back(&rows)?;
            settled.debited = gained.into_iter().map(|(s, (_, n))| (s, n)).collect();
            Ok(settled)
        })
        .await
    }
}

/// The billed seconds of each of `ids` not ended, as the transaction sees them (on PostgreSQL the
/// rows are locked: a concurrent ending waits, then finds them ended).
async fn billed_before(
    txn: &mut WriteTxn,
    backend: DbBackend,
    ids: &[&str],
) -> StoreResult<HashMap<String, i64>> {
    let statements = ids
        .chunks(CHUNK)
        .map(|chunk| {
            session::Entity::find()
                .select_only()
                .columns([session::Column::Id, session::Column::BilledSeconds])
                .filter(session::Column::Id.is_in(chunk.to_vec()))
                .filter(session::Column::EndedAt.is_null())
                .lock_exclusive()
                .build(backend)
        })
        .collect();
    let mut before = HashMap::new();
    for row in txn.query(statements).await? {
        before.insert(row.try_get("", "id")?, row.try_get("", "billed_seconds")?);
    }
    Ok(before)
}

/// The statements that raise each line's `billed_seconds` to its total (never lower it, never
/// touch an ended session) and refresh the heartbeat of every one not ended, grown or not (the
/// other nodes take a session whose heartbeat went stale for lost); with what each gained against
/// `before`: session → (account, seconds).
fn raise_totals(
    backend: DbBackend,
    lines: &[BillLine],
    before: &HashMap<String, i64>,
) -> (Vec<Statement>, HashMap<String, (String, i64)>) {
    let mut statements = Vec::new();
    let mut gained = HashMap::new();
    let live: Vec<&BillLine> = lines
        .iter()
        .filter(|l| before.contains_key(&l.session_id))
        .collect();
    for chunk in live.chunks(CHUNK) {
        let mut update = Query::update();
        update
            .table(session::Entity)
            .value(session::Column::HeartbeatAt, now_ms())
            .and_where(
                Expr::col(session::Column::Id).is_in(chunk.iter().map(|l| l.session_id.as_str())),
            )
            .and_where(Expr::col(session::Column::EndedAt).is_null());
        let grow: Vec<&&BillLine> = chunk
            .iter()
            .filter(|l| l.total_seconds > before[&l.session_id])
            .collect();
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
        statements.push(backend.build(&update));
        for l in grow {
            gained.insert(
                l.session_id.clone(),
                (
                    l.account_id.clone(),
                    l.total_seconds - before[&l.session_id],
                ),
            );
        }
    }
    (statements, gained)
}

/// One ledger line per session that gained (a multi-row insert), one debit per account, which
/// answers the account's balance after it.
fn debit(
    backend: DbBackend,
    gained: &HashMap<String, (String, i64)>,
    reason: &str,
) -> Vec<Statement> {
    let mut statements = Vec::new();
    if gained.is_empty() {
        return statements;
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
        statements.push(usage::Entity::insert_many(chunk.to_vec()).build(backend));
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
        let update = Query::update()
            .table(account::Entity)
            .value(
                account::Column::BalanceMs,
                balance.finally(Expr::col(account::Column::BalanceMs)),
            )
            .and_where(Expr::col(account::Column::Id).is_in(chunk.iter().map(|(a, _)| *a)))
            .returning(
                Query::returning().columns([account::Column::Id, account::Column::BalanceMs]),
            )
            .to_owned();
        statements.push(backend.build(&update));
    }
    statements
}

/// The statements that end each of `endings` (rows not ended, as read under the write): its
/// state, reason and `ended_at`; each account's live count lowered by the sessions it ended; and
/// the link uses of starts that never went live given back.
fn end_rows(backend: DbBackend, endings: &[&FinalLine]) -> Vec<Statement> {
    let mut statements = Vec::new();
    let now = now_ms();
    for chunk in endings.chunks(CHUNK) {
        let by_id = |value: &dyn Fn(&FinalLine) -> Expr, column: session::Column| {
            let mut case = CaseStatement::new();
            for e in chunk {
                case = case.case(
                    Expr::col(session::Column::Id).eq(e.session_id.as_str()),
                    value(e),
                );
            }
            case.finally(Expr::col(column))
        };
        let update = Query::update()
            .table(session::Entity)
            .value(
                session::Column::State,
                by_id(&|e| Expr::val(e.state.as_str()), session::Column::State),
            )
            .value(
                session::Column::EndReason,
                by_id(&|e| Expr::val(e.end_reason), session::Column::EndReason),
            )
            .value(
                session::Column::FailureReason,
                by_id(
                    &|e| Expr::val(e.failure_reason.clone()),
                    session::Column::FailureReason,
                ),
            )
            .value(
                session::Column::EndedAt,
                by_id(&|e| Expr::val(e.ended_at), session::Column::EndedAt),
            )
            .value(session::Column::UpdatedAt, now)
            .and_where(
                Expr::col(session::Column::Id).is_in(chunk.iter().map(|e| e.session_id.as_str())),
            )
            .and_where(Expr::col(session::Column::EndedAt).is_null())
            .returning_all()
            .to_owned();
        statements.push(backend.build(&update));
    }
    let mut released: HashMap<&str, i64> = HashMap::new();
    let mut refunded: HashMap<&str, i64> = HashMap::new();
    for e in endings {
        *released.entry(&e.account_id).or_default() += 1;
        if let (true, Some(link_id)) = (e.refund_link, &e.link_id) {
            *refunded.entry(link_id).or_default() += 1;
        }
    }
    statements.extend(lower_by(
        backend,
        account::Entity,
        account::Column::LiveSessions,
        account::Column::Id,
        released,
    ));
    statements.extend(lower_by(
        backend,
        link::Entity,
        link::Column::Uses,
        link::Column::Id,
        refunded,
    ));
    statements
}

/// The statements that lower `column` of each row of `table` (by `id`) by its count, never
/// below 0; one a few hundred rows.
fn lower_by<T, C>(
    backend: DbBackend,
    table: T,
    column: C,
    id: C,
    counts: HashMap<&str, i64>,
) -> Vec<Statement>
where
    T: IntoTableRef + Copy,
    C: IntoIden + Copy,
{
    let counts: Vec<(&str, i64)> = counts.into_iter().collect();
    counts
        .chunks(CHUNK)
        .map(|chunk| {
            let mut lowered = CaseStatement::new();
            for (key, n) in chunk {
                lowered = lowered.case(
                    Expr::col(id).eq(*key),
                    Expr::case(Expr::col(column).gt(*n), Expr::col(column).sub(*n)).finally(0i64),
                );
            }
            let update = Query::update()
                .table(table)
                .value(column, lowered.finally(Expr::col(column)))
                .and_where(Expr::col(id).is_in(chunk.iter().map(|(key, _)| *key)))
                .to_owned();
            backend.build(&update)
        })
        .collect()
}

/// What the statements answered: balances (`id`, `balance_ms`; the last word for each account)
/// and ended sessions' rows.
type ReadBack = (HashMap<String, i64>, HashMap<String, session::Model>);

fn read_back(rows: &[QueryResult]) -> StoreResult<ReadBack> {
    let (mut balances, mut ended) = (HashMap::new(), HashMap::new());
    for row in rows {
        if row.column_names() == ["id", "balance_ms"] {
            let id: String = row.try_get("", "id")?;
            balances.insert(id, row.try_get("", "balance_ms")?);
        } else {
            let session = session::Model::from_query_result(row, "")?;
            ended.insert(session.id.clone(), session);
        }
    }
    Ok((balances, ended))
}
