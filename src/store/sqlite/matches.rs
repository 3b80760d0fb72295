//! Match claims and records on SQLite: the writer's group commit. One
//! transaction reads the claims, records and intents a batch touches,
//! decides every claim in order ([`claims::decide`]), and writes the
//! claims, intents, records, color balances and audit of what was stored.

use std::collections::HashSet;

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use tokio::sync::oneshot;

use super::{CHANGED_NOW, ROWS_PER_INSERT};
use crate::domain::{MatchIntent, MatchRecord, Millis, TenantId, UserId};
use crate::store::claims::{self, Ask};
use crate::store::rows::{self, ClaimRow, INTENT_COLUMNS, MATCH_COLUMNS};
use crate::store::{AuditEvent, Claim, StoreResult, color_moves};

/// What a match job asks the writer to do.
pub enum MatchWork {
    /// Store intents with claims (before their games are created).
    Claim {
        intents: Vec<MatchIntent>,
        owner: String,
        attempt_ms: Millis,
    },
    /// Store records of games that exist, with claims and audit.
    Insert {
        records: Vec<MatchRecord>,
        audit: Vec<AuditEvent>,
    },
}

/// One caller's match write, waiting for the writer.
pub struct MatchJob {
    pub work: MatchWork,
    pub live_since: Millis,
    pub done: oneshot::Sender<StoreResult<Vec<Claim>>>,
}

impl MatchJob {
    /// How many matches the job writes.
    pub fn len(&self) -> usize {
        match &self.work {
            MatchWork::Claim { intents, .. } => intents.len(),
            MatchWork::Insert { records, .. } => records.len(),
        }
    }

    pub fn answer(self, result: StoreResult<Vec<Claim>>) {
        let _ = self.done.send(result);
    }

    /// Each match of the job: tenant, id and players, white first.
    fn matches(&self) -> Vec<(&TenantId, &crate::domain::MatchId, [&UserId; 2])> {
        match &self.work {
            MatchWork::Claim { intents, .. } => intents
                .iter()
                .map(|i| (&i.tenant_id, &i.match_id, i.players()))
                .collect(),
            MatchWork::Insert { records, .. } => records
                .iter()
                .map(|r| {
                    (
                        &r.tenant_id,
                        &r.match_id,
                        [&r.white.user_id, &r.black.user_id],
                    )
                })
                .collect(),
        }
    }
}

/// Match ids of `ids` found in `table`.
async fn existing(
    conn: &mut SqliteConnection,
    table: &str,
    ids: &[String],
) -> StoreResult<HashSet<String>> {
    let mut found = HashSet::new();
    for chunk in ids.chunks(ROWS_PER_INSERT) {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT match_id FROM {table} WHERE match_id IN ("
        ));
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(id);
        }
        q.push(")");
        for row in q.build().fetch_all(&mut *conn).await? {
            found.insert(row.try_get::<String, _>(0)?);
        }
    }
    Ok(found)
}

/// The claims stored on these players.
async fn claims_of(
    conn: &mut SqliteConnection,
    players: &[(&TenantId, &UserId)],
) -> StoreResult<Vec<ClaimRow>> {
    let mut held = Vec::new();
    for chunk in players.chunks(ROWS_PER_INSERT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT tenant_id, user_id, match_id, since FROM active_players \
             WHERE (tenant_id, user_id) IN (",
        );
        q.push_values(chunk, |mut b, (t, u)| {
            b.push_bind(t.as_str()).push_bind(u.as_str());
        });
        q.push(")");
        held.extend(q.build_query_as::<ClaimRow>().fetch_all(&mut *conn).await?);
    }
    Ok(held)
}

/// Writes a batch of match jobs inside the writer's transaction; answers
/// each job's claims, in order. (Boxed: the writer task's future must be
/// `Send` for every lifetime, which the compiler checks best here.)
pub fn write_matches<'a>(
    conn: &'a mut SqliteConnection,
    jobs: &'a [MatchJob],
) -> futures::future::BoxFuture<'a, StoreResult<Vec<Vec<Claim>>>> {
    Box::pin(write_batch(conn, jobs))
}

async fn write_batch(
    conn: &mut SqliteConnection,
    jobs: &[MatchJob],
) -> StoreResult<Vec<Vec<Claim>>> {
    let matches: Vec<_> = jobs.iter().map(MatchJob::matches).collect();
    let ids: Vec<String> = matches
        .iter()
        .flatten()
        .map(|(_, m, _)| m.to_string())
        .collect();
    let recorded = existing(conn, "match_records", &ids).await?;
    let intended = existing(conn, "match_intents", &ids).await?;
    let mut players: Vec<(&TenantId, &UserId)> = matches
        .iter()
        .flatten()
        .flat_map(|(t, _, p)| p.map(|u| (*t, u)))
        .collect();
    players.sort();
    players.dedup();
    let live_since = jobs.iter().map(|j| j.live_since).min().unwrap_or(0);
    let held = rows::live_claims(claims_of(conn, &players).await?, live_since);
    let asks: Vec<Ask<'_>> = jobs
        .iter()
        .zip(&matches)
        .flat_map(|(job, ms)| {
            let recorded = &recorded;
            let intended = &intended;
            ms.iter().map(move |&(tenant, match_id, players)| {
                let id = match_id.to_string();
                Ask {
                    tenant,
                    match_id,
                    players,
                    stored_before: recorded.contains(&id)
                        || (matches!(job.work, MatchWork::Claim { .. }) && intended.contains(&id)),
                }
            })
        })
        .collect();
    let decided = claims::decide(&asks, &held);

    // Claims of the matches stored now.
    let claimed: Vec<(&TenantId, &UserId, String, Millis)> = asks
        .iter()
        .zip(&decided)
        .filter(|(a, c)| c.is_stored() && !a.stored_before)
        .flat_map(|(a, _)| {
            let since = created_at(jobs, a.match_id);
            a.players
                .map(|u| (a.tenant, u, a.match_id.to_string(), since))
        })
        .collect();
    for chunk in claimed.chunks(ROWS_PER_INSERT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO active_players (tenant_id, user_id, match_id, since) ",
        );
        q.push_values(chunk, |mut b, (t, u, m, since)| {
            b.push_bind(t.as_str())
                .push_bind(u.as_str())
                .push_bind(m)
                .push_bind(*since);
        });
        q.push(
            " ON CONFLICT (tenant_id, user_id) DO UPDATE \
              SET match_id = excluded.match_id, since = excluded.since",
        );
        q.build().execute(&mut *conn).await?;
    }

    // Each job's rows, for the matches stored now.
    let mut answers = Vec::with_capacity(jobs.len());
    let mut at = 0;
    for job in jobs {
        let n = matches[answers.len()].len();
        let outcome = &decided[at..at + n];
        let fresh = |i: usize| outcome[i].is_stored() && !asks[at + i].stored_before;
        match &job.work {
            MatchWork::Claim {
                intents,
                owner,
                attempt_ms,
            } => {
                let new: Vec<&MatchIntent> = intents
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| fresh(*i))
                    .map(|(_, m)| m)
                    .collect();
                insert_intents(conn, &new, owner, *attempt_ms).await?;
            }
            MatchWork::Insert { records, audit } => {
                let new: Vec<&MatchRecord> = records
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| fresh(*i))
                    .map(|(_, r)| r)
                    .collect();
                insert_records(conn, &new).await?;
                let refused: HashSet<String> = records
                    .iter()
                    .zip(outcome)
                    .filter(|(_, c)| !c.is_stored())
                    .map(|(r, _)| r.match_id.to_string())
                    .collect();
                let audit: Vec<&AuditEvent> = audit
                    .iter()
                    .filter(|e| !refused.contains(&e.subject))
                    .collect();
                insert_audit(conn, &audit).await?;
            }
        }
        answers.push(outcome.to_vec());
        at += n;
    }
    Ok(answers)
}

/// When the match of `id` was made (its claims start then).
fn created_at(jobs: &[MatchJob], id: &crate::domain::MatchId) -> Millis {
    jobs.iter()
        .find_map(|j| match &j.work {
            MatchWork::Claim { intents, .. } => intents
                .iter()
                .find(|i| &i.match_id == id)
                .map(|i| i.created_at),
            MatchWork::Insert { records, .. } => records
                .iter()
                .find(|r| &r.match_id == id)
                .map(|r| r.created_at),
        })
        .unwrap_or_default()
}

/// Binds a match's [`INTENT_COLUMNS`] (the columns intents and records share).
fn push_match(
    b: &mut sqlx::query_builder::Separated<'_, '_, Sqlite, &'static str>,
    match_id: &crate::domain::MatchId,
    tenant: &TenantId,
    sides: [&crate::domain::MatchSide; 2],
    pool: &crate::domain::PoolKey,
    source: crate::domain::MatchSource,
    created_at: Millis,
) {
    b.push_bind(match_id.to_string())
        .push_bind(tenant.to_string());
    for side in sides {
        b.push_bind(side.user_id.to_string())
            .push_bind(side.username.as_ref().map(|u| u.to_string()))
            .push_bind(side.rating)
            .push_bind(side.entry_id.map(|e| e.to_string()));
    }
    b.push_bind(pool.to_string())
        .push_bind(source.as_str())
        .push_bind(created_at);
}

async fn insert_intents(
    conn: &mut SqliteConnection,
    intents: &[&MatchIntent],
    owner: &str,
    attempt_ms: Millis,
) -> StoreResult<()> {
    for chunk in intents.chunks(ROWS_PER_INSERT / 2) {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "INSERT INTO match_intents ({INTENT_COLUMNS}, owner, attempt_until) "
        ));
        q.push_values(chunk, |mut b, m| {
            push_match(
                &mut b,
                &m.match_id,
                &m.tenant_id,
                [&m.white, &m.black],
                &m.pool,
                m.source,
                m.created_at,
            );
            b.push_bind(owner.to_owned())
                .push_bind(attempt_ms)
                .push_unseparated(format!(" + {CHANGED_NOW}"));
        });
        q.push(" ON CONFLICT (match_id) DO NOTHING");
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Inserts records (a record already stored is left as it is), moves the
/// color balances of the ones inserted now, and drops their intents.
async fn insert_records(conn: &mut SqliteConnection, records: &[&MatchRecord]) -> StoreResult<()> {
    let mut fresh: Vec<&MatchRecord> = Vec::with_capacity(records.len());
    for chunk in records.chunks(ROWS_PER_INSERT / 2) {
        let mut q =
            QueryBuilder::<Sqlite>::new(format!("INSERT INTO match_records ({MATCH_COLUMNS}) "));
        q.push_values(chunk, |mut b, r| {
            push_match(
                &mut b,
                &r.match_id,
                &r.tenant_id,
                [&r.white, &r.black],
                &r.pool,
                r.source,
                r.created_at,
            );
            b.push_bind(r.game_id.to_string()).push_bind(r.finished_at);
        });
        q.push(" ON CONFLICT (match_id) DO NOTHING RETURNING match_id");
        let inserted: Vec<String> = q
            .build()
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        fresh.extend(rows::newly_inserted(chunk.iter().copied(), inserted));
    }
    // Color balances move only for matches inserted now, never twice.
    for chunk in color_moves(&fresh).chunks(ROWS_PER_INSERT) {
        let mut q =
            QueryBuilder::<Sqlite>::new("INSERT INTO players (tenant_id, user_id, color_balance) ");
        q.push_values(chunk, |mut b, (t, u, d)| {
            b.push_bind(t.as_str()).push_bind(u.as_str()).push_bind(*d);
        });
        q.push(
            " ON CONFLICT (tenant_id, user_id) DO UPDATE \
                  SET color_balance = color_balance + excluded.color_balance",
        );
        q.build().execute(&mut *conn).await?;
    }
    for chunk in records.chunks(ROWS_PER_INSERT) {
        let mut q = QueryBuilder::<Sqlite>::new("DELETE FROM match_intents WHERE match_id IN (");
        let mut list = q.separated(", ");
        for r in chunk {
            list.push_bind(r.match_id.to_string());
        }
        q.push(")");
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

pub async fn insert_audit(conn: &mut SqliteConnection, events: &[&AuditEvent]) -> StoreResult<()> {
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO audit_events (at, tenant_id, kind, subject, detail) ",
        );
        q.push_values(chunk, |mut b, e| {
            b.push_bind(e.at)
                .push_bind(e.tenant_id.to_string())
                .push_bind(e.kind.clone())
                .push_bind(e.subject.clone())
                .push_bind(e.detail.to_string());
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}
