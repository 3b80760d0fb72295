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

/// What the batch's transaction finds before it writes.
#[derive(Default)]
struct Found {
    recorded: HashSet<String>,
    intended: HashSet<String>,
    withdrawn: HashSet<String>,
    claims: Vec<ClaimRow>,
}

/// Begins the batch's transaction and reads all its decisions need —
/// which of its matches are recorded, intended or withdrawn, and the claims
/// stored on its players — as one query string: sqlx runs its statements
/// one after the other on its worker thread, so the writer waits for one
/// answer instead of one per statement (the waits, not the statements, were
/// most of the writer's cost). Claims are looked up one tenant at a time
/// (`tenant_id = ? AND user_id IN (…)` walks the primary key; a row-value
/// `IN` would scan the table).
async fn begin_and_look(
    conn: &mut SqliteConnection,
    ids: &[String],
    players: &[(&TenantId, &UserId)],
) -> StoreResult<Found> {
    let mut q = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE;");
    for chunk in ids.chunks(ROWS_PER_INSERT) {
        q.push(" WITH ids (match_id) AS (");
        q.push_values(chunk, |mut b, id| {
            b.push_bind(id);
        });
        q.push(
            ") SELECT 'recorded', NULL, NULL, match_id, NULL \
               FROM match_records WHERE match_id IN ids \
             UNION ALL SELECT 'intended', NULL, NULL, match_id, NULL \
               FROM match_intents WHERE match_id IN ids \
             UNION ALL SELECT 'withdrawn', NULL, NULL, match_id, NULL \
               FROM withdrawn_matches WHERE match_id IN ids;",
        );
    }
    for tenant_players in players.chunk_by(|a, b| a.0 == b.0) {
        let tenant = tenant_players[0].0;
        for chunk in tenant_players.chunks(ROWS_PER_INSERT) {
            q.push(
                " SELECT 'claim', tenant_id, user_id, active_match_id, active_since \
                  FROM players WHERE tenant_id = ",
            );
            q.push_bind(tenant.as_str()).push(" AND user_id IN (");
            let mut list = q.separated(", ");
            for (_, user) in chunk {
                list.push_bind(user.as_str());
            }
            q.push(") AND active_match_id IS NOT NULL;");
        }
    }
    let mut found = Found::default();
    for row in q.build().fetch_all(&mut *conn).await? {
        let match_id: String = row.try_get(3)?;
        match row.try_get::<&str, _>(0)? {
            "recorded" => found.recorded.insert(match_id),
            "intended" => found.intended.insert(match_id),
            "withdrawn" => found.withdrawn.insert(match_id),
            _ => {
                found.claims.push(ClaimRow {
                    tenant_id: row.try_get(1)?,
                    user_id: row.try_get(2)?,
                    match_id,
                    since: row.try_get(4)?,
                });
                true
            }
        };
    }
    Ok(found)
}

/// Writes a batch of match jobs in a transaction of its own; answers each
/// job's claims, in order. Two round trips to sqlx's worker: the look
/// (with `BEGIN IMMEDIATE`) and every write (with `COMMIT`). (Boxed: the
/// writer task's future must be `Send` for every lifetime, which the
/// compiler checks best here.)
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
    let mut players: Vec<(&TenantId, &UserId)> = matches
        .iter()
        .flatten()
        .flat_map(|(t, _, p)| p.map(|u| (*t, u)))
        .collect();
    players.sort();
    players.dedup();
    let mut found = begin_and_look(conn, &ids, &players).await?;
    // Intents to drop when their records are written: any stored, or any
    // this batch writes (a later job of it may record one of them).
    let any_intents = !found.intended.is_empty()
        || jobs
            .iter()
            .any(|j| matches!(j.work, MatchWork::Claim { .. }));
    let live_since = jobs.iter().map(|j| j.live_since).min().unwrap_or(0);
    let held = rows::live_claims(std::mem::take(&mut found.claims), live_since);
    let asks: Vec<Ask<'_>> = jobs
        .iter()
        .zip(&matches)
        .flat_map(|(job, ms)| {
            let found = &found;
            ms.iter().map(move |&(tenant, match_id, players)| {
                let id = match_id.to_string();
                Ask {
                    tenant,
                    match_id,
                    players,
                    stored_before: found.recorded.contains(&id)
                        || (matches!(job.work, MatchWork::Claim { .. })
                            && found.intended.contains(&id)),
                    withdrawn: found.withdrawn.contains(&id),
                }
            })
        })
        .collect();
    let decided = claims::decide(&asks, &held);

    // Each job's rows, for the matches stored now. A match twice in the
    // batch (a retry meeting its first try) is written once: its color
    // balances must move once.
    let mut writes = QueryBuilder::<Sqlite>::new("");
    let mut written: HashSet<&crate::domain::MatchId> = HashSet::new();
    let mut answers = Vec::with_capacity(jobs.len());
    let mut at = 0;
    for job in jobs {
        let n = matches[answers.len()].len();
        let outcome = &decided[at..at + n];
        let mut fresh = |i: usize, id| {
            outcome[i].is_stored() && !asks[at + i].stored_before && written.insert(id)
        };
        match &job.work {
            MatchWork::Claim {
                intents,
                owner,
                attempt_ms,
            } => {
                let new: Vec<&MatchIntent> = intents
                    .iter()
                    .enumerate()
                    .filter(|(i, m)| fresh(*i, &m.match_id))
                    .map(|(_, m)| m)
                    .collect();
                push_intents(&mut writes, &new, owner, *attempt_ms);
                let claims: Vec<Move<'_>> = new
                    .iter()
                    .flat_map(|m| {
                        m.players()
                            .map(|u| (&m.tenant_id, u, 0, m.match_id.to_string(), m.created_at))
                    })
                    .collect();
                push_players(&mut writes, &claims);
            }
            MatchWork::Insert { records, audit } => {
                let new: Vec<&MatchRecord> = records
                    .iter()
                    .enumerate()
                    .filter(|(i, r)| fresh(*i, &r.match_id))
                    .map(|(_, r)| r)
                    .collect();
                push_records(&mut writes, &new);
                if any_intents {
                    push_intents_done(&mut writes, records);
                }
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
                push_audit(&mut writes, &audit);
            }
        }
        answers.push(outcome.to_vec());
        at += n;
    }
    writes.push(" COMMIT");
    writes.build().execute(&mut *conn).await?;
    Ok(answers)
}

/// A change to a player's row: tenant, player, color move (+1 white, -1
/// black, 0 for a claim alone), and the claim (match id, since).
type Move<'a> = (&'a TenantId, &'a UserId, i32, String, Millis);

/// Moves each player's color balance and run and sets their claim, one upsert per
/// player (a player is in one match of a batch at most: the claims say so).
fn push_players(q: &mut QueryBuilder<'_, Sqlite>, moves: &[Move<'_>]) {
    for chunk in moves.chunks(ROWS_PER_INSERT / 2) {
        q.push(
            " INSERT INTO players (tenant_id, user_id, color_balance, color_streak, active_match_id, active_since) ",
        );
        q.push_values(chunk, |mut b, (t, u, d, m, since)| {
            b.push_bind(t.to_string())
                .push_bind(u.to_string())
                .push_bind(*d)
                .push_bind(*d)
                .push_bind(m.clone())
                .push_bind(*since);
        });
        q.push(
            " ON CONFLICT (tenant_id, user_id) DO UPDATE \
                  SET color_balance = color_balance + excluded.color_balance, \
                      color_streak = CASE \
                        WHEN excluded.color_balance > 0 THEN MAX(color_streak, 0) + 1 \
                        WHEN excluded.color_balance < 0 THEN MIN(color_streak, 0) - 1 \
                        ELSE color_streak END, \
                      active_match_id = excluded.active_match_id, \
                      active_since = excluded.active_since;",
        );
    }
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
    for side in sides {
        b.push_bind(side.region.map(|r| r.as_str()));
    }
    for side in sides {
        b.push_bind(side.time_control.map(|t| t.to_string()));
    }
}

fn push_intents(
    q: &mut QueryBuilder<'_, Sqlite>,
    intents: &[&MatchIntent],
    owner: &str,
    attempt_ms: Millis,
) {
    for chunk in intents.chunks(ROWS_PER_INSERT / 2) {
        q.push(format!(
            " INSERT INTO match_intents ({INTENT_COLUMNS}, owner, attempt_until) "
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
        q.push(" ON CONFLICT (match_id) DO NOTHING;");
    }
}

/// Inserts the records stored now (none stored before: the look said so,
/// inside this transaction), moves their players' color balances and claims
/// them (the same row write).
fn push_records(q: &mut QueryBuilder<'_, Sqlite>, records: &[&MatchRecord]) {
    for chunk in records.chunks(ROWS_PER_INSERT / 2) {
        q.push(format!(" INSERT INTO match_records ({MATCH_COLUMNS}) "));
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
        q.push(";");
    }
    let moves: Vec<Move<'_>> = records
        .iter()
        .flat_map(|r| {
            let id = r.match_id.to_string();
            [
                (&r.tenant_id, &r.white.user_id, 1, id.clone(), r.created_at),
                (&r.tenant_id, &r.black.user_id, -1, id, r.created_at),
            ]
        })
        .collect();
    push_players(q, &moves);
}

/// Drops the intents of matches now recorded.
fn push_intents_done(q: &mut QueryBuilder<'_, Sqlite>, records: &[MatchRecord]) {
    for chunk in records.chunks(ROWS_PER_INSERT) {
        q.push(" DELETE FROM match_intents WHERE match_id IN (");
        let mut list = q.separated(", ");
        for r in chunk {
            list.push_bind(r.match_id.to_string());
        }
        q.push(");");
    }
}

fn push_audit(q: &mut QueryBuilder<'_, Sqlite>, events: &[&AuditEvent]) {
    for chunk in events.chunks(ROWS_PER_INSERT) {
        q.push(" INSERT INTO audit_events (at, tenant_id, kind, subject, detail) ");
        q.push_values(chunk, |mut b, e| {
            b.push_bind(e.at)
                .push_bind(e.tenant_id.to_string())
                .push_bind(e.kind.clone())
                .push_bind(e.subject.clone())
                .push_bind(e.detail.to_string());
        });
        q.push(";");
    }
}

pub async fn insert_audit(conn: &mut SqliteConnection, events: &[&AuditEvent]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::<Sqlite>::new("");
    push_audit(&mut q, events);
    q.build().execute(&mut *conn).await?;
    Ok(())
}
