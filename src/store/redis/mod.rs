//! Redis [`QueueStore`]: hot queue state shared by every API node and
//! worker, on a single Redis or on Redis Cluster.
//!
//! ## Keys
//!
//! Every key starts with a prefix (`mm` by default) and carries a hash tag,
//! so the keys one script touches share a Cluster slot:
//!
//! - per pool `{tenant|pool}`: `e:<id>` (entry hash), `w` (searching, by
//!   enqueued_at), `r` (reserved, by deadline), `done` (finished, by time),
//!   `waits` (recent match waits), `lease` (the worker passing over it);
//! - per user `{tenant|user}`: `cur` (the waiting entry, `<pool> <id>`),
//!   `game` (active-game guard `<until>|<json>`), `ent:<id>` (an entry's
//!   pool, for lookups by id), `idem:<key>` (idempotent answers);
//! - per game `{tenant|g|game}`: `players`;
//! - `pools`: every pool with recent joins (member `<tenant>|<pool>`, score
//!   the last join);
//! - `guards` (single Redis) or `{<slot tag>}:guards`, one per hash slot
//!   (Cluster): the marker that the active-game guards are intact. A Redis
//!   that lost its data has none, and every claim script (join, hold)
//!   refuses until the guards are rebuilt from the durable store and the
//!   marker set again (see [`slots`]).
//!
//! ## Announcements
//!
//! Two pub/sub channels, one subscription per node for both: `due` (a
//! join made a pool due: workers pass over it at once) and `entries`
//! (the change's time, then the ids of entries that reached a final
//! status, published by the script that changed them, so no change goes
//! unannounced; the node's [`EntryFeed`] wakes the event streams waiting
//! on them).
//!
//! ## Steps across slots
//!
//! A change inside one slot is one Lua script (called by SHA). A join claims
//! the user first (`cur`, refusing on a guard or a waiting entry), then adds
//! the entry to its pool; a commit sets both guards (dropping the players'
//! `cur` pointers), then marks the entries matched. On a single Redis, where
//! any script may touch any key, each of these is one script. A crash
//! between steps leaves a `cur` pointing at an entry that is missing or
//! finished (on a Cluster), which the next join of that user repairs, or a
//! reservation past its deadline, which the next worker finishes or rolls
//! back.

mod due;
pub use due::Subscription;
mod keys;
mod scripts;
mod slots;

pub use due::RedisDueChannel;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use futures::{StreamExt, TryStreamExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisError, ScriptInvocation, Value};

use self::keys::Keys;
use super::{
    CancelOutcome, EntryStore, GuardStore, JoinOutcome, LeaseStore, PairingStore, PoolStats,
    PoolStatsStore, QueueStore, RECENT_GAPS, Reservation, STATS_BUCKET_MS, STATS_KEPT_MS,
    StaleReservation, StoreError, StoreResult, Waiting, feed::EntryFeed, stats_bucket,
};
use crate::domain::{
    ActiveGame, Deviation, EndReason, EntryStatus, GameId, MAX_DEVIATION, MatchId, MatchIntent,
    MatchRecord, MatchSide, Millis, Opponent, PoolKey, PoolRef, QueueEntry, QueueEntryId, Rating,
    RatingRange, TenantId, TimeControl, UNKNOWN_DEVIATION, UserId, Username, now_millis,
};
use scripts::*;

/// Connect and command timeouts: an outage is an error within a second.
const TIMEOUT: Duration = Duration::from_secs(1);

impl From<RedisError> for StoreError {
    fn from(e: RedisError) -> Self {
        StoreError::Unavailable(format!("redis: {e}"))
    }
}

/// One connection handle for a single node or a cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[derive(Clone)]
pub struct RedisQueueStore {
    conn: Conn,
    keys: Keys,
    /// How long an entry stays findable by id (its `ent:` index key).
    index_ttl_ms: Millis,
    /// When this node last noted each pool in `pools`: once a second is
    /// enough (the score only keeps a pool from being purged), so most joins
    /// skip that round trip. A std lock: never held across an await.
    registered: Arc<Mutex<HashMap<PoolRef, Millis>>>,
    /// Where the scripts announce entries that reached a final status,
    /// and where this node's subscription hands them on (see [`events`]).
    entry_channel: String,
    feed: Arc<EntryFeed>,
}

/// How often a node re-notes a pool it sees joins for in `pools`.
const REGISTER_EVERY_MS: Millis = 1_000;

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("redis: {what}"))
}

fn status_name(s: EntryStatus) -> &'static str {
    match s {
        EntryStatus::Searching => "SEARCHING",
        EntryStatus::Reserved => "RESERVED",
        EntryStatus::Matched => "MATCHED",
        EntryStatus::Cancelled => "CANCELLED",
        EntryStatus::TimedOut => "TIMED_OUT",
    }
}

fn parse_status(s: &str) -> StoreResult<EntryStatus> {
    Ok(match s {
        "SEARCHING" => EntryStatus::Searching,
        "RESERVED" => EntryStatus::Reserved,
        "MATCHED" => EntryStatus::Matched,
        "CANCELLED" => EntryStatus::Cancelled,
        "TIMED_OUT" => EntryStatus::TimedOut,
        _ => return Err(corrupt("entry status")),
    })
}

/// An entry as hash fields (absent options are left out).
fn entry_fields(e: &QueueEntry) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("id", e.id.to_string()),
        ("tenant_id", e.tenant_id.to_string()),
        ("user_id", e.user_id.to_string()),
        ("pool", e.pool.to_string()),
        ("rating", e.rating.to_string()),
        ("status", status_name(e.status).to_owned()),
        ("enqueued_at", e.enqueued_at.to_string()),
        ("updated_at", e.updated_at.to_string()),
        ("last_seen_at", e.last_seen_at.to_string()),
    ];
    let optional = [
        ("username", e.username.as_ref().map(|u| u.to_string())),
        ("request_id", e.request_id.clone()),
        ("client_metadata", e.client_metadata.clone()),
        ("match_id", e.match_id.map(|m| m.to_string())),
        ("reserved_until", e.reserved_until.map(|r| r.to_string())),
        ("reason", e.reason.map(|r| r.as_str().to_owned())),
        ("rating_range", e.rating_range.map(range_field)),
        (
            "rating_deviation",
            (e.rating_deviation != UNKNOWN_DEVIATION).then(|| e.rating_deviation.to_string()),
        ),
        ("also", (!e.also.is_empty()).then(|| also_field(&e.also))),
        ("game_id", e.game_id.as_ref().map(|g| g.to_string())),
        (
            "opponent",
            e.opponent
                .as_ref()
                .and_then(|o| serde_json::to_string(o).ok()),
        ),
    ];
    f.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    f
}

/// The other time controls of an entry as one hash field: `3+0,3+2`.
fn also_field(also: &[TimeControl]) -> String {
    also.iter()
        .map(|tc| tc.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn also_from(field: Option<&str>) -> StoreResult<Vec<TimeControl>> {
    field.map_or(Ok(Vec::new()), |f| {
        f.split(',')
            .map(|tc| tc.parse().map_err(|_| corrupt("entry time controls")))
            .collect()
    })
}

/// A deviation as its hash field keeps it: absent when unknown (350).
fn deviation_from(field: Option<&str>) -> StoreResult<Deviation> {
    field.map_or(Ok(UNKNOWN_DEVIATION), |d| {
        d.parse::<Deviation>()
            .ok()
            .filter(|d| *d <= MAX_DEVIATION)
            .ok_or_else(|| corrupt("entry rating deviation"))
    })
}

/// A rating range as one hash field: `min:max`.
fn range_field(r: RatingRange) -> String {
    format!("{}:{}", r.min_delta, r.max_delta)
}

/// A rating range from its hash field.
fn range_from(field: Option<&str>) -> StoreResult<Option<RatingRange>> {
    field
        .map(|f| {
            f.split_once(':')
                .and_then(|(lo, hi)| RatingRange::new(lo.parse().ok()?, hi.parse().ok()?).ok())
                .ok_or_else(|| corrupt("entry rating range"))
        })
        .transpose()
}

/// An entry from the flat field/value list HGETALL answers.
fn entry_from(v: Value) -> StoreResult<QueueEntry> {
    let flat: Vec<String> = redis::from_redis_value(v).map_err(|_| corrupt("entry"))?;
    let map: HashMap<String, String> = flat
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect();
    let get = |k: &str| {
        map.get(k)
            .ok_or_else(|| corrupt(&format!("entry field {k}")))
    };
    let num = |k: &str| -> StoreResult<i64> {
        get(k)?
            .parse()
            .map_err(|_| corrupt(&format!("entry field {k}")))
    };
    let opt_num = |k: &str| -> StoreResult<Option<i64>> {
        map.get(k)
            .map(|v| v.parse().map_err(|_| corrupt(&format!("entry field {k}"))))
            .transpose()
    };
    let status = parse_status(get("status")?)?;
    Ok(QueueEntry {
        id: QueueEntryId::parse(get("id")?).map_err(|_| corrupt("entry id"))?,
        tenant_id: TenantId::parse(get("tenant_id")?).map_err(|_| corrupt("tenant"))?,
        user_id: UserId::parse(get("user_id")?).map_err(|_| corrupt("user"))?,
        username: map.get("username").and_then(|u| Username::sanitize(u)),
        pool: get("pool")?.parse().map_err(|_| corrupt("pool"))?,
        rating: num("rating")? as i32,
        status,
        enqueued_at: num("enqueued_at")?,
        updated_at: num("updated_at")?,
        last_seen_at: num("last_seen_at")?,
        request_id: map.get("request_id").cloned(),
        client_metadata: map.get("client_metadata").cloned(),
        match_id: map
            .get("match_id")
            .map(|m| MatchId::parse(m).map_err(|_| corrupt("match id")))
            .transpose()?,
        // A deadline means something only while the entry is reserved (the
        // commit leaves the field behind rather than spend a call on it).
        reserved_until: match status {
            EntryStatus::Reserved => opt_num("reserved_until")?,
            _ => None,
        },
        game_id: map
            .get("game_id")
            .map(|g| GameId::parse(g).map_err(|_| corrupt("game id")))
            .transpose()?,
        opponent: map
            .get("opponent")
            .map(|o| serde_json::from_str::<Opponent>(o).map_err(|_| corrupt("opponent")))
            .transpose()?,
        reason: map
            .get("reason")
            .map(|r| EndReason::parse(r).ok_or_else(|| corrupt("entry reason")))
            .transpose()?,
        rating_range: range_from(map.get("rating_range").map(String::as_str))?,
        rating_deviation: deviation_from(map.get("rating_deviation").map(String::as_str))?,
        also: also_from(map.get("also").map(String::as_str))?,
    })
}

/// A guard as stored: `<until>|<json>`.
fn guard_value(g: &ActiveGame) -> String {
    format!(
        "{}|{}",
        g.until,
        serde_json::to_string(g).unwrap_or_default()
    )
}

fn guard_from(s: &str) -> StoreResult<ActiveGame> {
    let (_, json) = s.split_once('|').ok_or_else(|| corrupt("guard"))?;
    serde_json::from_str(json).map_err(|_| corrupt("guard"))
}

/// Pairs reserved, or matches committed, by one script call at most: the
/// scripts change a pool's sets once per call with Lua's `unpack`, which
/// takes at most 8,000 values (a round is `MATCH_PAIRS_PER_BATCH` pairs,
/// 50 by default).
const PAIRS_PER_CALL: usize = 200;

/// Records grouped by pool, in their order, in chunks of [`PAIRS_PER_CALL`].
fn by_pool(records: &[MatchRecord]) -> Vec<(PoolRef, Vec<&MatchRecord>)> {
    let mut groups: Vec<(PoolRef, Vec<&MatchRecord>)> = Vec::new();
    for r in records {
        // Each pool an entry of the match waited in (two for a match
        // across regions, whose commit script in each pool finds the entry
        // that is there); a challenge's match has none but its own.
        let mut pools = vec![r.white.pool_in(r.pool)];
        if r.black.pool_in(r.pool) != pools[0] {
            pools.push(r.black.pool_in(r.pool));
        }
        for key in pools {
            let full = |g: &Vec<&MatchRecord>| g.len() >= PAIRS_PER_CALL;
            match groups
                .iter_mut()
                .rev()
                .find(|(p, g)| p.tenant_id == r.tenant_id && p.key == key && !full(g))
            {
                Some((_, g)) => g.push(r),
                None => groups.push((
                    PoolRef {
                        tenant_id: r.tenant_id.clone(),
                        key,
                    },
                    vec![r],
                )),
            }
        }
    }
    groups
}

/// The outcome-count arguments of a script: bucket of `now`, oldest bucket
/// kept, and the ttl of the count hash.
fn stats_args(inv: &mut ScriptInvocation<'_>, now: Millis) {
    let bucket = stats_bucket(now);
    inv.arg(bucket)
        .arg(bucket - STATS_KEPT_MS / STATS_BUCKET_MS)
        .arg(STATS_KEPT_MS + STATS_BUCKET_MS);
}

/// How long Redis keeps a key meant to last until `until`, counted from
/// the caller's `now` (the services' clock, not Redis's or this host's):
/// at least a second.
fn ttl(until: Millis, now: Millis) -> Millis {
    (until - now).max(1_000)
}

impl RedisQueueStore {
    /// Connects to `url` (a single node), or with `cluster` to the
    /// comma-separated seed nodes of a Redis Cluster. `prefix` starts every
    /// key (tests use one each).
    pub async fn connect(
        url: &str,
        cluster: bool,
        prefix: &str,
        index_ttl_ms: Millis,
    ) -> StoreResult<Self> {
        let conn = if cluster {
            let nodes: Vec<&str> = url
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let client = redis::cluster::ClusterClient::builder(nodes)
                .connection_timeout(TIMEOUT)
                .response_timeout(TIMEOUT)
                .build()?;
            Conn::Cluster(client.get_async_connection().await?)
        } else {
            let client = redis::Client::open(url)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(TIMEOUT))
                .set_response_timeout(Some(TIMEOUT))
                .set_number_of_retries(1);
            Conn::Single(ConnectionManager::new_with_config(client, config).await?)
        };
        let keys = Keys::new(prefix, matches!(conn, Conn::Single(_)));
        Ok(Self {
            entry_channel: keys.entry_channel(),
            keys,
            conn,
            index_ttl_ms,
            registered: Default::default(),
            feed: EntryFeed::new(),
        })
    }

    /// A single Redis (not a Cluster): a script may touch any keys.
    fn single_node(&self) -> bool {
        matches!(self.conn, Conn::Single(_))
    }

    fn pool_of(member: &str) -> Option<PoolRef> {
        let (tenant, key) = member.rsplit_once('|')?;
        Some(PoolRef {
            tenant_id: TenantId::parse(tenant).ok()?,
            key: key.parse().ok()?,
        })
    }

    /// Lists a searching entry in the other pools it waits in (its other
    /// time controls): each pool's guests, and the pools the workers pass
    /// over. Not atomic with the entry: a crash part way leaves it in fewer
    /// pools, never in a pool it did not ask for.
    async fn list_guest(&self, entry: &QueueEntry, now: Millis) -> StoreResult<()> {
        if entry.also.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let member = Self::cur_value(&entry.pool, &entry.id);
        for pool in entry.pools().skip(1) {
            conn.zadd::<_, _, _, ()>(self.keys.pool(&pool).guests(), &member, entry.enqueued_at)
                .await?;
            conn.zadd::<_, _, _, ()>(self.keys.pools(), keys::pool_member(&pool), now)
                .await?;
        }
        Ok(())
    }

    /// The searching entries of other pools listed in `pool` (their other
    /// time controls), each read from its own pool. A listing whose entry
    /// has ended (or is gone) is dropped here; a reserved one is skipped
    /// (it may be put back).
    async fn guests(&self, pool: &PoolRef) -> StoreResult<Vec<Waiting>> {
        let key = self.keys.pool(pool).guests();
        let mut conn = self.conn.clone();
        let members: Vec<String> = conn.zrange(&key, 0, -1).await?;
        // Every listed entry read at once (the connection pipelines them),
        // each from its own pool's slot.
        let entries = try_join_all(members.iter().map(|member| async move {
            let listed = member.split_once(' ').and_then(|(home, id)| {
                Some((home.parse::<PoolKey>().ok()?, QueueEntryId::parse(id).ok()?))
            });
            let Some((home, id)) = listed else {
                return Ok(None);
            };
            let at = PoolRef {
                tenant_id: pool.tenant_id.clone(),
                key: home,
            };
            Ok::<_, StoreError>(Some((home, self.entry(&at, &id).await?)))
        }))
        .await?;
        let mut found = Vec::new();
        for (member, entry) in members.iter().zip(entries) {
            let Some((home, entry)) = entry else {
                conn.zrem::<_, _, ()>(&key, member).await?;
                continue;
            };
            match entry {
                Some(e) if e.status == EntryStatus::Searching => found.push(Waiting {
                    id: e.id,
                    user_id: e.user_id,
                    username: e.username,
                    rating: e.rating,
                    enqueued_at: e.enqueued_at,
                    last_seen_at: e.last_seen_at,
                    request_id: e.request_id,
                    rating_range: e.rating_range,
                    rating_deviation: e.rating_deviation,
                    home: Some(home),
                }),
                Some(e) if e.status == EntryStatus::Reserved => {}
                _ => conn.zrem::<_, _, ()>(&key, member).await?,
            }
        }
        Ok(found)
    }

    /// `<pool> <id>`, the value of a user's `cur` key.
    fn cur_value(pool: &PoolKey, id: &QueueEntryId) -> String {
        format!("{pool} {id}")
    }

    async fn entry(&self, pool: &PoolRef, id: &QueueEntryId) -> StoreResult<Option<QueueEntry>> {
        let mut conn = self.conn.clone();
        let v: Value = conn.hgetall(self.keys.pool(pool).entry(id)).await?;
        match &v {
            Value::Array(items) if items.is_empty() => Ok(None),
            Value::Map(items) if items.is_empty() => Ok(None),
            _ => entry_from(v).map(Some),
        }
    }

    async fn unclaim(
        &self,
        tenant: &TenantId,
        user: &UserId,
        pool: &PoolKey,
        id: &QueueEntryId,
    ) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        UNCLAIM_USER
            .key(self.keys.user(tenant, user).current())
            .arg(Self::cur_value(pool, id))
            .invoke_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }

    /// The pool an entry of this user is in, from its index key.
    async fn pool_of_entry(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: &QueueEntryId,
    ) -> StoreResult<Option<PoolRef>> {
        let mut conn = self.conn.clone();
        let key: Option<String> = conn.get(self.keys.user(tenant, user).entry(id)).await?;
        Ok(key.and_then(|k| k.parse().ok()).map(|key| PoolRef {
            tenant_id: tenant.clone(),
            key,
        }))
    }

    async fn all_pools(&self) -> StoreResult<Vec<PoolRef>> {
        let mut conn = self.conn.clone();
        let members: Vec<String> = conn.zrange(self.keys.pools(), 0, -1).await?;
        Ok(members.iter().filter_map(|m| Self::pool_of(m)).collect())
    }
}

#[async_trait]
impl EntryStore for RedisQueueStore {
    async fn join(&self, entry: QueueEntry, now: Millis) -> StoreResult<JoinOutcome> {
        let mut conn = self.conn.clone();
        let pool = entry.pool_ref();
        let user = self.keys.user(&entry.tenant_id, &entry.user_id);
        let value = Self::cur_value(&entry.pool, &entry.id);
        let tag = self.keys.pool(&pool);
        let fields = entry_fields(&entry);
        // On a single Redis the claim and the entry are one script; on a
        // Cluster the user's keys and the pool's live in different slots, so
        // the entry is added once the claim has succeeded.
        let single = self.single_node();
        let mut claimed = false;
        for _ in 0..3 {
            let mut claim = if single {
                JOIN.key(user.current())
            } else {
                CLAIM_USER.key(user.current())
            };
            claim
                .key(user.game())
                .key(user.entry(&entry.id))
                .key(self.keys.guards_marker(&entry.tenant_id, &entry.user_id))
                .arg(&value)
                .arg(now)
                .arg(self.index_ttl_ms)
                .arg(entry.pool.to_string());
            if single {
                claim
                    .key(tag.entry(&entry.id))
                    .key(tag.waiting())
                    .arg(entry.id.to_string())
                    .arg(entry.enqueued_at);
                for (k, v) in &fields {
                    claim.arg(k).arg(v);
                }
            }
            let answer: Vec<String> = claim.invoke_async(&mut conn).await?;
            match answer.first().map(String::as_str) {
                Some("ok") => {
                    claimed = true;
                    break;
                }
                Some("lost") => return Err(StoreError::GuardsLost),
                Some("active") => {
                    return Ok(JoinOutcome::ActiveGame(guard_from(&format!(
                        "0|{}",
                        answer[1]
                    ))?));
                }
                Some("cur") => {
                    let current = &answer[1];
                    let parsed = current.split_once(' ').and_then(|(p, id)| {
                        Some((p.parse::<PoolKey>().ok()?, QueueEntryId::parse(id).ok()?))
                    });
                    if let Some((key, id)) = parsed {
                        let at = PoolRef {
                            tenant_id: entry.tenant_id.clone(),
                            key,
                        };
                        if let Some(existing) = self
                            .entry(&at, &id)
                            .await?
                            .filter(|e| e.status.is_waiting())
                        {
                            return Ok(if existing.same_search(&entry) {
                                JoinOutcome::Existing(existing)
                            } else {
                                JoinOutcome::AlreadyInQueue(existing)
                            });
                        }
                    }
                    // A pointer left by a crash or a finished entry: repair and retry.
                    UNCLAIM_USER
                        .key(user.current())
                        .arg(current)
                        .invoke_async::<i64>(&mut conn)
                        .await?;
                }
                _ => return Err(corrupt("claim answer")),
            }
        }
        if !claimed {
            return Err(StoreError::Unavailable(
                "could not claim the user after repairs".into(),
            ));
        }
        if !single {
            let mut add = ADD_ENTRY.key(tag.entry(&entry.id));
            add.key(tag.waiting())
                .arg(entry.id.to_string())
                .arg(entry.enqueued_at);
            for (k, v) in &fields {
                add.arg(k).arg(v);
            }
            add.invoke_async::<i64>(&mut conn).await?;
        }
        self.list_guest(&entry, now).await?;
        let due = {
            let mut registered = self.registered.lock().unwrap_or_else(|e| e.into_inner());
            let due = registered
                .get(&pool)
                .is_none_or(|&at| now - at >= REGISTER_EVERY_MS);
            if due {
                if registered.len() > 100_000 {
                    registered.clear();
                }
                registered.insert(pool.clone(), now);
            }
            due
        };
        if due {
            let member = keys::pool_member(&pool);
            conn.zadd::<_, _, _, ()>(self.keys.pools(), member, now)
                .await?;
        }
        Ok(JoinOutcome::Created(entry))
    }

    async fn requeue(
        &self,
        pool: &PoolRef,
        id: &QueueEntryId,
        game: &GameId,
        now: Millis,
    ) -> StoreResult<Option<QueueEntry>> {
        let tag = self.keys.pool(pool);
        let Some(entry) = self.entry(pool, id).await? else {
            return Ok(None);
        };
        if entry.status != EntryStatus::Matched || entry.game_id.as_ref() != Some(game) {
            return Ok(None);
        }
        // The user first, as a join claims them (no other entry, no
        // guard), then the entry, in its pool's slot; the claim is undone
        // if the entry turns out not to be matched for this game any more.
        let user = self.keys.user(&pool.tenant_id, &entry.user_id);
        let value = Self::cur_value(&pool.key, id);
        let mut conn = self.conn.clone();
        let answer: Vec<String> = CLAIM_USER
            .key(user.current())
            .key(user.game())
            .key(user.entry(id))
            .key(self.keys.guards_marker(&pool.tenant_id, &entry.user_id))
            .arg(&value)
            .arg(now)
            .arg(self.index_ttl_ms)
            .arg(pool.key.to_string())
            .invoke_async(&mut conn)
            .await?;
        match answer.first().map(String::as_str) {
            Some("ok") => {}
            Some("lost") => return Err(StoreError::GuardsLost),
            Some("active" | "cur") => return Ok(None),
            _ => return Err(corrupt("claim answer")),
        }
        let v: Value = REQUEUE
            .key(tag.entry(id))
            .key(tag.waiting())
            .key(tag.done())
            .arg(id.to_string())
            .arg(game.to_string())
            .arg(now)
            .invoke_async(&mut conn)
            .await?;
        if matches!(v, Value::Nil) {
            UNCLAIM_USER
                .key(user.current())
                .arg(&value)
                .invoke_async::<i64>(&mut conn)
                .await?;
            return Ok(None);
        }
        conn.zadd::<_, _, _, ()>(self.keys.pools(), keys::pool_member(pool), now)
            .await?;
        let entry = entry_from(v)?;
        self.list_guest(&entry, now).await?;
        Ok(Some(entry))
    }

    async fn status(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: &QueueEntryId,
        now: Millis,
    ) -> StoreResult<Option<QueueEntry>> {
        let mut conn = self.conn.clone();
        let v: Value = if self.single_node() {
            STATUS
                .key(self.keys.user(tenant, user).entry(id))
                .arg(tenant.as_str())
                .arg(user.as_str())
                .arg(now)
                .arg(self.keys.tenant_open(tenant))
                .arg(format!("}}:e:{id}"))
                .invoke_async(&mut conn)
                .await?
        } else {
            let Some(pool) = self.pool_of_entry(tenant, user, id).await? else {
                return Ok(None);
            };

            READ_ENTRY
                .key(self.keys.pool(&pool).entry(id))
                .arg(tenant.as_str())
                .arg(user.as_str())
                .arg(now)
                .invoke_async(&mut conn)
                .await?
        };
        match v {
            Value::Nil => Ok(None),
            v => entry_from(v).map(Some),
        }
    }

    async fn user_entry(
        &self,
        tenant: &TenantId,
        user: &UserId,
    ) -> StoreResult<Option<QueueEntry>> {
        let mut conn = self.conn.clone();
        let cur: Option<String> = conn.get(self.keys.user(tenant, user).current()).await?;
        let Some((key, id)) = cur.as_deref().and_then(|c| c.split_once(' ')) else {
            return Ok(None);
        };
        let (Ok(key), Ok(id)) = (key.parse::<PoolKey>(), QueueEntryId::parse(id)) else {
            return Ok(None);
        };
        let pool = PoolRef {
            tenant_id: tenant.clone(),
            key,
        };
        Ok(self
            .entry(&pool, &id)
            .await?
            .filter(|e| e.status.is_waiting()))
    }

    async fn active_game(
        &self,
        tenant: &TenantId,
        user: &UserId,
        now: Millis,
    ) -> StoreResult<Option<ActiveGame>> {
        let mut conn = self.conn.clone();
        let g: Option<String> = conn.get(self.keys.user(tenant, user).game()).await?;
        Ok(g.map(|g| guard_from(&g))
            .transpose()?
            .filter(|g| g.until > now))
    }

    async fn cancel(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: &QueueEntryId,
        now: Millis,
    ) -> StoreResult<CancelOutcome> {
        let Some(pool) = self.pool_of_entry(tenant, user, id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        let tag = self.keys.pool(&pool);
        let mut conn = self.conn.clone();
        let answer: Vec<Value> = CANCEL
            .key(tag.entry(id))
            .key(tag.waiting())
            .key(tag.done())
            .arg(tenant.as_str())
            .arg(user.as_str())
            .arg(now)
            .arg(id.to_string())
            .arg(&self.entry_channel)
            .invoke_async(&mut conn)
            .await?;
        let kind: String = answer
            .first()
            .map(|v| redis::from_redis_value(v.clone()))
            .transpose()
            .map_err(|_| corrupt("cancel"))?
            .unwrap_or_default();
        match kind.as_str() {
            "cancelled" => {
                let entry = entry_from(answer.get(1).cloned().ok_or_else(|| corrupt("cancel"))?)?;
                self.unclaim(tenant, user, &pool.key, id).await?;
                Ok(CancelOutcome::Cancelled(Box::new(entry)))
            }
            "cannot" => Ok(CancelOutcome::CannotCancel),
            _ => Ok(CancelOutcome::NotFound),
        }
    }

    async fn touch(&self, pool: &PoolRef, seen: &[(QueueEntryId, Millis)]) -> StoreResult<()> {
        let tag = self.keys.pool(pool);
        for chunk in seen.chunks(PAIRS_PER_CALL) {
            let mut inv = TOUCH.key(tag.waiting());
            inv.arg(tag.entry_prefix());
            for (id, at) in chunk {
                inv.arg(id.to_string()).arg(*at);
            }
            let mut conn = self.conn.clone();
            inv.invoke_async::<i64>(&mut conn).await?;
        }
        Ok(())
    }

    fn feed(&self) -> Arc<EntryFeed> {
        self.feed.clone()
    }
}

#[async_trait]
impl PairingStore for RedisQueueStore {
    async fn pools(&self) -> StoreResult<Vec<PoolRef>> {
        self.all_pools().await
    }

    async fn waiting(&self, pool: &PoolRef) -> StoreResult<Vec<Waiting>> {
        let tag = self.keys.pool(pool);
        let mut conn = self.conn.clone();
        let guests = self.guests(pool).await?;
        let rows: Vec<Vec<Option<String>>> = WAITING
            .key(tag.waiting())
            .arg(tag.entry_prefix())
            .invoke_async(&mut conn)
            .await?;
        rows.into_iter()
            .filter(|r| r.first().is_some_and(Option::is_some))
            .map(|r| {
                let field = |i: usize| r.get(i).cloned().flatten();
                let num = |i: usize| {
                    field(i)
                        .and_then(|v| v.parse::<i64>().ok())
                        .ok_or_else(|| corrupt("waiting entry"))
                };
                Ok(Waiting {
                    id: QueueEntryId::parse(&field(0).unwrap_or_default())
                        .map_err(|_| corrupt("waiting id"))?,
                    user_id: UserId::parse(&field(1).unwrap_or_default())
                        .map_err(|_| corrupt("waiting user"))?,
                    username: field(2).as_deref().and_then(Username::sanitize),
                    rating: num(3)? as i32,
                    enqueued_at: num(4)?,
                    last_seen_at: num(5)?,
                    request_id: field(6),
                    rating_range: range_from(field(7).as_deref())?,
                    rating_deviation: deviation_from(field(8).as_deref())?,
                    home: None,
                })
            })
            .collect::<StoreResult<Vec<Waiting>>>()
            .map(|mut own| {
                own.extend(guests);
                own
            })
    }

    async fn reserve(
        &self,
        pool: &PoolRef,
        reservations: &[Reservation],
        until: Millis,
        now: Millis,
    ) -> StoreResult<Vec<bool>> {
        if reservations.is_empty() {
            return Ok(Vec::new());
        }
        let tag = self.keys.pool(pool);
        let mut conn = self.conn.clone();
        let mut granted = Vec::with_capacity(reservations.len());
        for chunk in reservations.chunks(PAIRS_PER_CALL) {
            let mut inv = RESERVE.key(tag.waiting());
            inv.key(tag.reserved())
                .arg(tag.entry_prefix())
                .arg(until)
                .arg(now);
            for r in chunk {
                inv.arg(r.a.to_string())
                    .arg(r.b.to_string())
                    .arg(r.match_id.to_string());
            }
            let flags: Vec<i64> = inv.invoke_async(&mut conn).await?;
            granted.extend(flags.into_iter().map(|f| f == 1));
        }
        Ok(granted)
    }

    async fn commit(
        &self,
        records: &[MatchRecord],
        guard_until: Millis,
        now: Millis,
    ) -> StoreResult<()> {
        // On a single Redis the matches of one pool (a round's) are one
        // script. On a Cluster, two phases, each sent concurrently (each
        // command to its own slot's node), in this order:
        // 1. per player, the guard and the release of the user's pointer to
        //    the entry (one script): from here a join of either player
        //    answers ACTIVE_GAME_EXISTS. The record is persisted, so the
        //    entries can only end MATCHED by this match (a stale
        //    reservation of it is finished, never rolled back);
        // 2. per pool, the entries (a challenge's match has none).
        let groups = by_pool(records);
        if self.single_node() {
            try_join_all(
                groups
                    .iter()
                    .map(|(pool, g)| self.commit_matches(pool, g, guard_until, now)),
            )
            .await?;
            return Ok(());
        }
        try_join_all(records.iter().map(|r| self.set_guards(r, guard_until, now))).await?;
        try_join_all(
            groups
                .iter()
                .map(|(pool, g)| self.commit_entries(pool, g, now)),
        )
        .await?;
        Ok(())
    }

    async fn release(
        &self,
        pool: &PoolRef,
        reservations: &[Reservation],
        now: Millis,
    ) -> StoreResult<()> {
        let tag = self.keys.pool(pool);
        let mut conn = self.conn.clone();
        for r in reservations {
            RELEASE
                .key(tag.waiting())
                .key(tag.reserved())
                .arg(tag.entry_prefix())
                .arg(r.match_id.to_string())
                .arg(now)
                .arg(r.a.to_string())
                .arg(r.b.to_string())
                .invoke_async::<i64>(&mut conn)
                .await?;
        }
        Ok(())
    }

    async fn time_out(
        &self,
        pool: &PoolRef,
        ids: &[QueueEntryId],
        now: Millis,
    ) -> StoreResult<Vec<QueueEntry>> {
        self.end_searching(
            pool,
            ids,
            (EntryStatus::TimedOut, EndReason::MaxQueueTime),
            now,
        )
        .await
    }

    async fn cancel_entries(
        &self,
        pool: &PoolRef,
        ids: &[QueueEntryId],
        reason: EndReason,
        now: Millis,
    ) -> StoreResult<Vec<QueueEntry>> {
        self.end_searching(pool, ids, (EntryStatus::Cancelled, reason), now)
            .await
    }

    async fn stale_reservations(&self, now: Millis) -> StoreResult<Vec<StaleReservation>> {
        let mut found = Vec::new();
        for pool in self.all_pools().await? {
            let tag = self.keys.pool(&pool);
            let mut conn = self.conn.clone();
            let ids: Vec<String> = conn
                .zrangebyscore(tag.reserved(), "-inf", format!("({now}"))
                .await?;
            for id in ids {
                let Ok(id) = QueueEntryId::parse(&id) else {
                    continue;
                };
                let Some(e) = self.entry(&pool, &id).await? else {
                    continue;
                };
                if let (EntryStatus::Reserved, Some(m)) = (e.status, e.match_id) {
                    found.push((pool.clone(), m, id));
                }
            }
        }
        Ok(StaleReservation::pair_up(found))
    }
}

#[async_trait]
impl GuardStore for RedisQueueStore {
    async fn finish_game(&self, tenant: &TenantId, game: &GameId) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let key = self.keys.game_players(tenant, game);
        let players: Option<String> = conn.get(&key).await?;
        let Some(players) = players else {
            return Ok(false);
        };
        let fragment = format!(
            "\"game_id\":{}",
            serde_json::to_string(game).unwrap_or_default()
        );
        for user in players.split(' ').filter_map(|u| UserId::parse(u).ok()) {
            LIFT_GUARD
                .key(self.keys.user(tenant, &user).game())
                .arg(&fragment)
                .invoke_async::<i64>(&mut conn)
                .await?;
        }
        conn.del::<_, ()>(&key).await?;
        Ok(true)
    }

    async fn hold_players(
        &self,
        intent: &MatchIntent,
        until: Millis,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let mut held = Vec::new();
        for side in [&intent.white, &intent.black] {
            let guard = intent
                .guard_for(&side.user_id, until)
                .ok_or_else(|| corrupt("intent"))?;
            let tag = self.keys.user(&intent.tenant_id, &side.user_id);
            let answer: i64 = HOLD_USER
                .key(tag.current())
                .key(tag.game())
                .key(self.keys.guards_marker(&intent.tenant_id, &side.user_id))
                .arg(guard_value(&guard))
                .arg(ttl(until, now))
                .arg(now)
                .invoke_async(&mut conn)
                .await?;
            if answer != 1 {
                for user in held {
                    self.lift_match_guard(&intent.tenant_id, user, &intent.match_id)
                        .await?;
                }
                return if answer < 0 {
                    Err(StoreError::GuardsLost)
                } else {
                    Ok(false)
                };
            }
            held.push(&side.user_id);
        }
        Ok(true)
    }

    async fn drop_hold(&self, intent: &MatchIntent) -> StoreResult<()> {
        for side in [&intent.white, &intent.black] {
            self.lift_match_guard(&intent.tenant_id, &side.user_id, &intent.match_id)
                .await?;
        }
        Ok(())
    }

    async fn restore_active_games(
        &self,
        games: &[(TenantId, UserId, ActiveGame)],
        now: Millis,
    ) -> StoreResult<()> {
        // Plain SET NX: a guard there is newer than the durable store's
        // view and stays. A single Redis takes them in pipelines; a Cluster
        // routes each to its slot's node, many at a time.
        let sets: Vec<(String, String, Millis)> = games
            .iter()
            .flat_map(|(tenant, user, game)| {
                let guard = (
                    self.keys.user(tenant, user).game(),
                    guard_value(game),
                    ttl(game.until, now),
                );
                let players = game.game_id.as_ref().map(|g| {
                    (
                        self.keys.game_players(tenant, g),
                        format!("{user} {}", game.opponent.user_id),
                        ttl(game.until, now),
                    )
                });
                std::iter::once(guard).chain(players)
            })
            .collect();
        self.set_nx_all(sets).await
    }

    async fn guards_intact(&self) -> StoreResult<bool> {
        // On a Cluster, a sample: a failover loses whole slot ranges, and
        // 64 evenly spread slots meet every node of up to 64 masters (the
        // claim scripts check the marker of their own slot in any case).
        let markers = self.keys.all_guards_markers();
        let step = (markers.len() / 64).max(1);
        let sample: Vec<&String> = markers.iter().step_by(step).collect();
        let found = try_join_all(sample.iter().map(|key| {
            let mut conn = self.conn.clone();
            async move { conn.exists::<_, bool>(*key).await }
        }))
        .await?;
        Ok(found.into_iter().all(|f| f))
    }

    async fn mark_guards_intact(&self) -> StoreResult<()> {
        let at = now_millis().to_string();
        futures::stream::iter(self.keys.all_guards_markers())
            .map(|key| {
                let (mut conn, at) = (self.conn.clone(), at.clone());
                async move { conn.set::<_, _, ()>(key, at).await }
            })
            .buffer_unordered(64)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

#[async_trait]
impl PoolStatsStore for RedisQueueStore {
    async fn pool_stats(&self, pool: &PoolRef, since: Millis) -> StoreResult<PoolStats> {
        let tag = self.keys.pool(pool);
        let mut conn = self.conn.clone();
        #[allow(clippy::type_complexity)]
        let (waiting, oldest, rated_waits, recent_gaps, counts): (
            u64,
            Vec<(String, f64)>,
            Vec<String>,
            Vec<i32>,
            HashMap<String, u64>,
        ) = redis::pipe()
            .zcard(tag.waiting())
            .zrange_withscores(tag.waiting(), 0, 0)
            .lrange(tag.waits(), 0, -1)
            .lrange(tag.gaps(), 0, -1)
            .hgetall(tag.stats())
            .query_async(&mut conn)
            .await?;
        let from = stats_bucket(since);
        let sum = |kind: &str| -> u64 {
            counts
                .iter()
                .filter_map(|(field, n)| {
                    let bucket: Millis = field.strip_prefix(kind)?.parse().ok()?;
                    (bucket >= from).then_some(*n)
                })
                .sum()
        };
        // `<ms>:<rating>`; a plain `<ms>` was kept before ratings were.
        let (recent_waits, recent_wait_ratings) = rated_waits
            .iter()
            .map(|w| {
                let (ms, rating) = w.split_once(':').unwrap_or((w, ""));
                Ok((
                    ms.parse::<Millis>().map_err(|_| corrupt("recent wait"))?,
                    rating.parse::<Rating>().ok(),
                ))
            })
            .collect::<StoreResult<(Vec<Millis>, Vec<Option<Rating>>)>>()?;
        Ok(PoolStats {
            waiting,
            oldest_enqueued_at: oldest.first().map(|(_, at)| *at as Millis),
            recent_waits,
            recent_wait_ratings,
            recent_gaps,
            matches: sum("m:"),
            timeouts: sum("t:"),
        })
    }

    async fn known_pools(&self) -> StoreResult<Vec<PoolRef>> {
        self.all_pools().await
    }
}

#[async_trait]
impl LeaseStore for RedisQueueStore {
    async fn lease_pool(&self, pool: &PoolRef, holder: &str, ttl_ms: Millis) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let held: i64 = LEASE
            .key(self.keys.pool(pool).lease())
            .arg(holder)
            .arg(ttl_ms.max(1))
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    async fn release_leases(&self, pools: &[PoolRef], holder: &str) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        for pool in pools {
            RELEASE_LEASE
                .key(self.keys.pool(pool).lease())
                .arg(holder)
                .invoke_async::<i64>(&mut conn)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl QueueStore for RedisQueueStore {
    async fn purge(&self, before: Millis, _now: Millis) -> StoreResult<usize> {
        let mut purged = 0;
        let mut conn = self.conn.clone();
        for pool in self.all_pools().await? {
            let tag = self.keys.pool(&pool);
            let (count, empty): (usize, i64) = PURGE_POOL
                .key(tag.done())
                .key(tag.waiting())
                .key(tag.reserved())
                .arg(tag.entry_prefix())
                .arg(before)
                .invoke_async(&mut conn)
                .await?;
            purged += count;
            let guests: usize = conn.zcard(tag.guests()).await?;
            if empty == 1 && guests == 0 {
                // Forget the pool only if nobody joined it since `before`.
                let member = keys::pool_member(&pool);
                let score: Option<f64> = conn.zscore(self.keys.pools(), &member).await?;
                if score.is_some_and(|s| (s as i64) < before) {
                    conn.zrem::<_, _, ()>(self.keys.pools(), &member).await?;
                }
            }
        }
        Ok(purged)
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }
}

impl RedisQueueStore {
    /// `SET key value NX PX ttl` for each, in pipelines of 500 on a single
    /// Redis, 64 at a time on a Cluster.
    async fn set_nx_all(&self, sets: Vec<(String, String, Millis)>) -> StoreResult<()> {
        let set = |key: &String, value: &String, ttl_ms: Millis| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key)
                .arg(value)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms.max(1));
            cmd
        };
        if self.single_node() {
            for chunk in sets.chunks(500) {
                let mut pipe = redis::pipe();
                for (key, value, ttl_ms) in chunk {
                    pipe.add_command(set(key, value, *ttl_ms)).ignore();
                }
                let mut conn = self.conn.clone();
                pipe.query_async::<()>(&mut conn).await?;
            }
            return Ok(());
        }
        futures::stream::iter(sets)
            .map(|(key, value, ttl_ms)| {
                let mut conn = self.conn.clone();
                let cmd = set(&key, &value, ttl_ms);
                async move { cmd.query_async::<Value>(&mut conn).await.map(|_| ()) }
            })
            .buffer_unordered(64)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Ends the searching entries of `ids` with a status and reason, and
    /// drops their users' pointers to them.
    async fn end_searching(
        &self,
        pool: &PoolRef,
        ids: &[QueueEntryId],
        (status, reason): (EntryStatus, EndReason),
        now: Millis,
    ) -> StoreResult<Vec<QueueEntry>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let tag = self.keys.pool(pool);
        let mut conn = self.conn.clone();
        let mut inv = END_SEARCHING.key(tag.waiting());
        inv.key(tag.done())
            .key(tag.stats())
            .arg(tag.entry_prefix())
            .arg(now);
        stats_args(&mut inv, now);
        inv.arg(status_name(status))
            .arg(reason.as_str())
            .arg(&self.entry_channel);
        for id in ids {
            inv.arg(id.to_string());
        }
        let changed: Vec<Value> = inv.invoke_async(&mut conn).await?;
        let entries = changed
            .into_iter()
            .map(entry_from)
            .collect::<StoreResult<Vec<_>>>()?;
        try_join_all(
            entries
                .iter()
                .map(|e| self.unclaim(&e.tenant_id, &e.user_id, &e.pool, &e.id)),
        )
        .await?;
        Ok(entries)
    }

    /// Adds one player's guard to `inv`: keys game, cur; arguments value,
    /// ttl, `cur` value or "" (see `SET_GUARD`).
    fn push_guard(
        &self,
        inv: &mut ScriptInvocation<'_>,
        record: &MatchRecord,
        side: &MatchSide,
        guard_until: Millis,
        now: Millis,
    ) -> StoreResult<()> {
        let guard = record
            .guard_for(&side.user_id, guard_until)
            .ok_or_else(|| corrupt("record"))?;
        let user = self.keys.user(&record.tenant_id, &side.user_id);
        let cur = side
            .entry_id
            .map(|id| Self::cur_value(&side.pool_in(record.pool), &id))
            .unwrap_or_default();
        inv.key(user.game())
            .key(user.current())
            .arg(guard_value(&guard))
            .arg(ttl(guard_until, now))
            .arg(cur);
        Ok(())
    }

    /// The game's player list: its key and value.
    fn players(&self, record: &MatchRecord) -> (String, String) {
        (
            self.keys.game_players(&record.tenant_id, &record.game_id),
            format!("{} {}", record.white.user_id, record.black.user_id),
        )
    }

    /// Adds the marking of the entries of matches of `pool` to `inv` (the
    /// `K` and `A` of `COMMIT_ENTRIES`).
    fn push_commit(
        &self,
        inv: &mut ScriptInvocation<'_>,
        pool: &PoolRef,
        records: &[&MatchRecord],
        now: Millis,
    ) {
        let tag = self.keys.pool(pool);
        inv.key(tag.reserved())
            .key(tag.waits())
            .key(tag.done())
            .key(tag.stats())
            .key(tag.gaps())
            .arg(tag.entry_prefix())
            .arg(now)
            .arg(super::RECENT_WAITS);
        stats_args(inv, now);
        inv.arg(RECENT_GAPS).arg(&self.entry_channel);
        for record in records {
            let sides = [
                (&record.white, &record.black),
                (&record.black, &record.white),
            ];
            let entries: Vec<_> = sides
                .into_iter()
                .filter_map(|(me, other)| me.entry_id.map(|id| (id, me, other)))
                .collect();
            inv.arg(record.match_id.to_string())
                .arg(record.game_id.to_string())
                .arg((record.white.rating - record.black.rating).abs())
                .arg(record.created_at)
                .arg(entries.len());
            for (id, me, other) in entries {
                inv.arg(id.to_string()).arg(
                    serde_json::to_string(&other.as_opponent_of(me, record.pool))
                        .unwrap_or_default(),
                );
            }
        }
    }

    /// Whole matches of one pool in one script (single Redis only).
    async fn commit_matches(
        &self,
        pool: &PoolRef,
        records: &[&MatchRecord],
        guard_until: Millis,
        now: Millis,
    ) -> StoreResult<()> {
        let mut inv = COMMIT_MATCHES.prepare_invoke();
        inv.arg(records.len());
        for record in records {
            self.push_guard(&mut inv, record, &record.white, guard_until, now)?;
            self.push_guard(&mut inv, record, &record.black, guard_until, now)?;
            let (players_key, players) = self.players(record);
            inv.key(players_key).arg(players).arg(ttl(guard_until, now));
        }
        self.push_commit(&mut inv, pool, records, now);
        let mut conn = self.conn.clone();
        inv.invoke_async::<Vec<String>>(&mut conn).await?;
        Ok(())
    }

    /// Both players' guards (with the release of their pointers to their
    /// entries) and the game's player list, sent at once (Cluster).
    async fn set_guards(
        &self,
        record: &MatchRecord,
        guard_until: Millis,
        now: Millis,
    ) -> StoreResult<()> {
        let guard = |side: &MatchSide| {
            let mut inv = SET_GUARD.prepare_invoke();
            self.push_guard(&mut inv, record, side, guard_until, now)?;
            let mut conn = self.conn.clone();
            Ok::<_, StoreError>(async move {
                inv.invoke_async::<i64>(&mut conn).await?;
                Ok::<_, StoreError>(())
            })
        };
        let players = async {
            let mut conn = self.conn.clone();
            let (key, value) = self.players(record);
            conn.pset_ex::<_, _, ()>(key, value, ttl(guard_until, now) as u64)
                .await?;
            Ok::<_, StoreError>(())
        };
        tokio::try_join!(guard(&record.white)?, guard(&record.black)?, players)?;
        Ok(())
    }

    /// Marks the entries of matches of one pool MATCHED (Cluster).
    async fn commit_entries(
        &self,
        pool: &PoolRef,
        records: &[&MatchRecord],
        now: Millis,
    ) -> StoreResult<()> {
        if records
            .iter()
            .all(|r| r.white.entry_id.is_none() && r.black.entry_id.is_none())
        {
            return Ok(());
        }
        let mut inv = COMMIT.prepare_invoke();
        self.push_commit(&mut inv, pool, records, now);
        let mut conn = self.conn.clone();
        inv.invoke_async::<Vec<String>>(&mut conn).await?;
        Ok(())
    }

    async fn lift_match_guard(
        &self,
        tenant: &TenantId,
        user: &UserId,
        match_id: &MatchId,
    ) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let fragment = format!("\"match_id\":\"{match_id}\"");
        LIFT_GUARD
            .key(self.keys.user(tenant, user).game())
            .arg(fragment)
            .invoke_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }
}
