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
use crate::store::{AuditEvent, Claim, StoreResult};

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

/// Whether `table` holds any row: the intents and withdrawn tables are
/// empty nearly always (the built-in game creator writes no intents), and
/// one look saves an index probe per match of the batch.
async fn any_rows(conn: &mut SqliteConnection, table: &str) -> StoreResult<bool> {
    Ok(
        sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM {table})"))
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// The claims stored on these players (in their `players` rows), sorted
/// by tenant: looked up one
/// tenant at a time (`tenant_id = ? AND user_id IN (…)` walks the primary
/// key; a row-value `IN` would scan the table).
async fn claims_of(
    conn: &mut SqliteConnection,
    players: &[(&TenantId, &UserId)],
) -> StoreResult<Vec<ClaimRow>> {
    let mut held = Vec::new();
    for tenant_players in players.chunk_by(|a, b| a.0 == b.0) {
        let tenant = tenant_players[0].0;
        for chunk in tenant_players.chunks(ROWS_PER_INSERT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT tenant_id, user_id, active_match_id AS match_id, active_since AS since \
                 FROM players WHERE tenant_id = ",
            );
            q.push_bind(tenant.as_str()).push(" AND user_id IN (");
            let mut list = q.separated(", ");
            for (_, user) in chunk {
                list.push_bind(user.as_str());
            }
            q.push(") AND active_match_id IS NOT NULL");
            held.extend(q.build_query_as::<ClaimRow>().fetch_all(&mut *conn).await?);
        }
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
    // (A batch that writes intents counts as having some: a later job of
    // the same transaction may record one of them.)
    let any_intents = jobs
        .iter()
        .any(|j| matches!(j.work, MatchWork::Claim { .. }))
        || any_rows(conn, "match_intents").await?;
    let intended = if any_intents {
        existing(conn, "match_intents", &ids).await?
    } else {
        HashSet::new()
    };
    let withdrawn = if any_rows(conn, "withdrawn_matches").await? {
        existing(conn, "withdrawn_matches", &ids).await?
    } else {
        HashSet::new()
    };
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
            let withdrawn = &withdrawn;
            ms.iter().map(move |&(tenant, match_id, players)| {
                let id = match_id.to_string();
                Ask {
                    tenant,
                    match_id,
                    players,
                    stored_before: recorded.contains(&id)
                        || (matches!(job.work, MatchWork::Claim { .. }) && intended.contains(&id)),
                    withdrawn: withdrawn.contains(&id),
                }
            })
        })
        .collect();
    let decided = claims::decide(&asks, &held);

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
                let claims: Vec<Move<'_>> = new
                    .iter()
                    .flat_map(|m| {
                        m.players()
                            .map(|u| (&m.tenant_id, u, 0, m.match_id.to_string(), m.created_at))
                    })
                    .collect();
                upsert_players(conn, &claims).await?;
            }
            MatchWork::Insert { records, audit } => {
                let new: Vec<&MatchRecord> = records
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| fresh(*i))
                    .map(|(_, r)| r)
                    .collect();
                insert_records(conn, &new, any_intents).await?;
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

/// A change to a player's row: tenant, player, color move (+1 white, -1
/// black, 0 for a claim alone), and the claim (match id, since).
type Move<'a> = (&'a TenantId, &'a UserId, i32, String, Millis);

/// Moves each player's color balance and sets their claim, one upsert per
/// player (a player is in one match of a batch at most: the claims say so).
async fn upsert_players(conn: &mut SqliteConnection, moves: &[Move<'_>]) -> StoreResult<()> {
    for chunk in moves.chunks(ROWS_PER_INSERT / 2) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO players (tenant_id, user_id, color_balance, active_match_id, active_since) ",
        );
        q.push_values(chunk, |mut b, (t, u, d, m, since)| {
            b.push_bind(t.as_str())
                .push_bind(u.as_str())
                .push_bind(*d)
                .push_bind(m.as_str())
                .push_bind(*since);
        });
        q.push(
            " ON CONFLICT (tenant_id, user_id) DO UPDATE \
                  SET color_balance = color_balance + excluded.color_balance, \
                      active_match_id = excluded.active_match_id, \
                      active_since = excluded.active_since",
        );
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
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
/// color balances of the ones inserted now and claims their players (the
/// same row write), and drops their intents (if any intent is stored).
async fn insert_records(
    conn: &mut SqliteConnection,
    records: &[&MatchRecord],
    any_intents: bool,
) -> StoreResult<()> {
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
    let moves: Vec<Move<'_>> = fresh
        .iter()
        .flat_map(|r| {
            let id = r.match_id.to_string();
            [
                (&r.tenant_id, &r.white.user_id, 1, id.clone(), r.created_at),
                (&r.tenant_id, &r.black.user_id, -1, id, r.created_at),
            ]
        })
        .collect();
    upsert_players(conn, &moves).await?;
    if !any_intents {
        return Ok(());
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
