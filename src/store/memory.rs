//! In-memory [`QueueStore`]: the embedded default's hot state.
//!
//! One `std::sync::Mutex` guards everything. That is what makes every
//! method atomic, and it is enough: no method awaits while holding it and
//! each does a handful of hash-map operations. Two choices keep the time it
//! is held short even when the maps grow: entries are boxed (a table resize
//! moves small slots) and maps use foldhash (entry ids are 128-bit ULIDs).
//! Expiries are kept in time-ordered queues, so a purge never scans.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    CancelOutcome, IdempotencyScope, JoinOutcome, PoolStats, QueueStore, RECENT_GAPS, Reservation,
    STATS_BUCKET_MS, STATS_KEPT_MS, StaleReservation, StoreResult, StoredAnswer, Waiting,
    stats_bucket,
};
use crate::domain::{
    ActiveGame, EntryStatus, GameId, MatchRecord, Millis, PoolRef, QueueEntry, QueueEntryId,
    TenantId, UserId,
};

/// How many recent match waits a pool remembers for its estimate.
const RECENT_WAITS: usize = 64;

type UserKey = (TenantId, UserId);
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Default)]
pub struct MemoryQueueStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<QueueEntryId, Box<QueueEntry>>,
    /// The one waiting entry of each user.
    by_user: HashMap<UserKey, QueueEntryId>,
    pools: HashMap<PoolRef, Pool>,
    /// Reserved entries, for finding stale reservations without a scan.
    reserved: BTreeSet<QueueEntryId>,
    active: HashMap<UserKey, Box<ActiveGame>>,
    /// Players of each guarded game.
    games: HashMap<(TenantId, GameId), Box<[UserId; 2]>>,
    answers: HashMap<IdempotencyScope, (StoredAnswer, Millis)>,
    /// Entries that reached a final status, in the order they did.
    finished: VecDeque<(Millis, QueueEntryId)>,
    /// Guard deadlines, soonest first (a guard may have been lifted since).
    guard_expiry: BTreeSet<(Millis, UserKey)>,
    /// Answer deadlines, soonest first.
    answer_expiry: BTreeSet<(Millis, IdempotencyScope)>,
    /// Pool leases: holder and deadline (wall clock).
    leases: HashMap<PoolRef, (String, Millis)>,
}

#[derive(Default)]
struct Pool {
    /// Searching entries, ordered by (enqueued_at, id): oldest first.
    searching: BTreeSet<(Millis, QueueEntryId)>,
    reserved: usize,
    recent_waits: VecDeque<Millis>,
    recent_gaps: VecDeque<i32>,
    /// (bucket, matches, time-outs), oldest first, for [`STATS_KEPT_MS`].
    outcomes: VecDeque<(Millis, u64, u64)>,
}

impl Pool {
    /// Counts outcomes at `now` and forgets buckets past keeping.
    fn count(&mut self, now: Millis, matches: u64, timeouts: u64) {
        let bucket = stats_bucket(now);
        match self.outcomes.back_mut() {
            Some((b, m, t)) if *b == bucket => {
                *m += matches;
                *t += timeouts;
            }
            _ => self.outcomes.push_back((bucket, matches, timeouts)),
        }
        let oldest = bucket - STATS_KEPT_MS / STATS_BUCKET_MS;
        while self.outcomes.front().is_some_and(|(b, _, _)| *b < oldest) {
            self.outcomes.pop_front();
        }
    }

    fn is_idle(&self) -> bool {
        self.searching.is_empty()
            && self.reserved == 0
            && self.recent_waits.is_empty()
            && self.outcomes.is_empty()
    }
}

impl MemoryQueueStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half change: every
        // method validates before it mutates. Keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn pool(&mut self, pool: &PoolRef) -> &mut Pool {
        self.pools.entry(pool.clone()).or_default()
    }

    fn active_game(&self, key: &UserKey, now: Millis) -> Option<&ActiveGame> {
        self.active.get(key).map(|g| &**g).filter(|g| g.until > now)
    }

    /// Takes a searching entry out of its pool's waiting set.
    fn unlist(&mut self, id: &QueueEntryId) {
        let Some(entry) = self.entries.get(id) else {
            return;
        };
        if let Some(pool) = self.pools.get_mut(&entry.pool_ref()) {
            pool.searching.remove(&(entry.enqueued_at, entry.id));
        }
    }

    /// Moves a waiting entry to a final status and drops the user's index.
    fn finish(&mut self, id: &QueueEntryId, status: EntryStatus, now: Millis) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        entry.status = status;
        entry.updated_at = now;
        entry.reserved_until = None;
        let key = (entry.tenant_id.clone(), entry.user_id.clone());
        self.by_user.remove(&key);
        self.finished.push_back((now, *id));
    }

    /// A copy of an entry, to hand to a caller.
    fn copy(&self, id: &QueueEntryId) -> Option<QueueEntry> {
        self.entries.get(id).map(|e| QueueEntry::clone(e))
    }

    fn set_reserved(&mut self, id: &QueueEntryId, reserved: bool) {
        if reserved {
            self.reserved.insert(*id);
        } else {
            self.reserved.remove(id);
        }
    }

    fn drop_empty_pool(&mut self, pool: &PoolRef) {
        if self.pools.get(pool).is_some_and(Pool::is_idle) {
            self.pools.remove(pool);
        }
    }
}

#[async_trait]
impl QueueStore for MemoryQueueStore {
    async fn join(&self, entry: QueueEntry, now: Millis) -> StoreResult<JoinOutcome> {
        let mut inner = self.lock();
        let key = (entry.tenant_id.clone(), entry.user_id.clone());
        if let Some(existing) = inner.by_user.get(&key).and_then(|id| inner.entries.get(id)) {
            return Ok(if existing.pool == entry.pool {
                JoinOutcome::Existing(QueueEntry::clone(existing))
            } else {
                JoinOutcome::AlreadyInQueue(QueueEntry::clone(existing))
            });
        }
        if let Some(game) = inner.active_game(&key, now) {
            return Ok(JoinOutcome::ActiveGame(game.clone()));
        }
        let pool = entry.pool_ref();
        inner
            .pool(&pool)
            .searching
            .insert((entry.enqueued_at, entry.id));
        inner.by_user.insert(key, entry.id);
        inner.entries.insert(entry.id, Box::new(entry.clone()));
        Ok(JoinOutcome::Created(entry))
    }

    async fn status(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: &QueueEntryId,
        now: Millis,
    ) -> StoreResult<Option<QueueEntry>> {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(id) else {
            return Ok(None);
        };
        if &entry.tenant_id != tenant || &entry.user_id != user {
            return Ok(None);
        }
        if entry.status.is_waiting() {
            entry.last_seen_at = entry.last_seen_at.max(now);
        }
        Ok(Some(QueueEntry::clone(entry)))
    }

    async fn user_entry(
        &self,
        tenant: &TenantId,
        user: &UserId,
    ) -> StoreResult<Option<QueueEntry>> {
        let inner = self.lock();
        let key = (tenant.clone(), user.clone());
        Ok(inner
            .by_user
            .get(&key)
            .and_then(|id| inner.entries.get(id))
            .map(|e| QueueEntry::clone(e)))
    }

    async fn active_game(
        &self,
        tenant: &TenantId,
        user: &UserId,
        now: Millis,
    ) -> StoreResult<Option<ActiveGame>> {
        let inner = self.lock();
        Ok(inner
            .active_game(&(tenant.clone(), user.clone()), now)
            .cloned())
    }

    async fn cancel(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: &QueueEntryId,
        now: Millis,
    ) -> StoreResult<CancelOutcome> {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get(id) else {
            return Ok(CancelOutcome::NotFound);
        };
        if &entry.tenant_id != tenant || &entry.user_id != user {
            return Ok(CancelOutcome::NotFound);
        }
        match entry.status {
            EntryStatus::Searching => {}
            EntryStatus::Reserved | EntryStatus::Matched => return Ok(CancelOutcome::CannotCancel),
            EntryStatus::Cancelled | EntryStatus::TimedOut => return Ok(CancelOutcome::NotFound),
        }
        inner.unlist(id);
        inner.finish(id, EntryStatus::Cancelled, now);
        let cancelled = inner.copy(id).expect("entry exists");
        Ok(CancelOutcome::Cancelled(Box::new(cancelled)))
    }

    async fn pools(&self) -> StoreResult<Vec<PoolRef>> {
        let inner = self.lock();
        Ok(inner
            .pools
            .iter()
            .filter(|(_, p)| !p.searching.is_empty() || p.reserved > 0)
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn waiting(&self, pool: &PoolRef) -> StoreResult<Vec<Waiting>> {
        let inner = self.lock();
        let Some(p) = inner.pools.get(pool) else {
            return Ok(Vec::new());
        };
        Ok(p.searching
            .iter()
            .filter_map(|(_, id)| inner.entries.get(id))
            .map(|e| Waiting {
                id: e.id,
                user_id: e.user_id.clone(),
                username: e.username.clone(),
                rating: e.rating,
                enqueued_at: e.enqueued_at,
                last_seen_at: e.last_seen_at,
                request_id: e.request_id.clone(),
            })
            .collect())
    }

    async fn reserve(
        &self,
        pool: &PoolRef,
        reservations: &[Reservation],
        until: Millis,
        now: Millis,
    ) -> StoreResult<Vec<bool>> {
        let mut inner = self.lock();
        let mut answers = Vec::with_capacity(reservations.len());
        for r in reservations {
            let searching = |id: &QueueEntryId| {
                inner
                    .entries
                    .get(id)
                    .is_some_and(|e| e.status == EntryStatus::Searching && &e.pool_ref() == pool)
            };
            let ok = r.a != r.b && searching(&r.a) && searching(&r.b);
            if ok {
                for id in [&r.a, &r.b] {
                    inner.unlist(id);
                    let entry = inner.entries.get_mut(id).expect("checked above");
                    entry.status = EntryStatus::Reserved;
                    entry.match_id = Some(r.match_id);
                    entry.reserved_until = Some(until);
                    entry.updated_at = now;
                    inner.set_reserved(id, true);
                }
                inner.pool(pool).reserved += 2;
            }
            answers.push(ok);
        }
        Ok(answers)
    }

    async fn commit(
        &self,
        records: &[MatchRecord],
        guard_until: Millis,
        now: Millis,
    ) -> StoreResult<()> {
        let mut inner = self.lock();
        for record in records {
            let pool = PoolRef {
                tenant_id: record.tenant_id.clone(),
                key: record.pool,
            };
            let mut matched_here = false;
            for me in [&record.white, &record.black] {
                let guard = record
                    .guard_for(&me.user_id, guard_until)
                    .expect("a side of its own record");
                let opponent = guard.opponent.clone();
                let key = (record.tenant_id.clone(), me.user_id.clone());
                inner.guard_expiry.insert((guard_until, key.clone()));
                inner.active.insert(key, Box::new(guard));
                let Some(entry_id) = &me.entry_id else {
                    continue;
                };
                let reserved_for_this = inner.entries.get(entry_id).is_some_and(|e| {
                    e.status == EntryStatus::Reserved
                        && e.match_id.as_ref() == Some(&record.match_id)
                });
                if !reserved_for_this {
                    continue;
                }
                let entry = inner.entries.get_mut(entry_id).expect("checked above");
                entry.game_id = Some(record.game_id.clone());
                entry.opponent = Some(opponent);
                let wait = now - entry.enqueued_at;
                inner.finish(entry_id, EntryStatus::Matched, now);
                inner.set_reserved(entry_id, false);
                let p = inner.pool(&pool);
                p.reserved = p.reserved.saturating_sub(1);
                p.recent_waits.push_front(wait.max(0));
                p.recent_waits.truncate(RECENT_WAITS);
                matched_here = true;
            }
            if matched_here {
                let p = inner.pool(&pool);
                p.count(now, 1, 0);
                p.recent_gaps
                    .push_front((record.white.rating - record.black.rating).abs());
                p.recent_gaps.truncate(RECENT_GAPS);
            }
            inner.games.insert(
                (record.tenant_id.clone(), record.game_id.clone()),
                Box::new([record.white.user_id.clone(), record.black.user_id.clone()]),
            );
        }
        Ok(())
    }

    async fn release(
        &self,
        _pool: &PoolRef,
        reservations: &[Reservation],
        now: Millis,
    ) -> StoreResult<()> {
        let mut inner = self.lock();
        for r in reservations {
            for id in [&r.a, &r.b] {
                let Some(entry) = inner.entries.get_mut(id) else {
                    continue;
                };
                if entry.status != EntryStatus::Reserved
                    || entry.match_id.as_ref() != Some(&r.match_id)
                {
                    continue;
                }
                entry.status = EntryStatus::Searching;
                entry.match_id = None;
                entry.reserved_until = None;
                entry.updated_at = now;
                let (pool, enqueued_at) = (entry.pool_ref(), entry.enqueued_at);
                inner.set_reserved(id, false);
                let p = inner.pool(&pool);
                p.reserved = p.reserved.saturating_sub(1);
                p.searching.insert((enqueued_at, *id));
            }
        }
        Ok(())
    }

    async fn time_out(
        &self,
        pool: &PoolRef,
        ids: &[QueueEntryId],
        now: Millis,
    ) -> StoreResult<Vec<QueueEntry>> {
        let mut inner = self.lock();
        let mut changed = Vec::new();
        for id in ids {
            let Some(entry) = inner.entries.get(id) else {
                continue;
            };
            if entry.status != EntryStatus::Searching || &entry.pool_ref() != pool {
                continue;
            }
            inner.unlist(id);
            inner.finish(id, EntryStatus::TimedOut, now);
            changed.extend(inner.copy(id));
        }
        if !changed.is_empty() {
            inner.pool(pool).count(now, 0, changed.len() as u64);
        }
        inner.drop_empty_pool(pool);
        Ok(changed)
    }

    async fn stale_reservations(&self, now: Millis) -> StoreResult<Vec<StaleReservation>> {
        let inner = self.lock();
        let mut by_match: HashMap<_, StaleReservation> = HashMap::default();
        for id in &inner.reserved {
            let Some(e) = inner.entries.get(id) else {
                continue;
            };
            let (Some(until), Some(match_id)) = (e.reserved_until, &e.match_id) else {
                continue;
            };
            if until < now {
                by_match
                    .entry(*match_id)
                    .or_insert_with(|| StaleReservation {
                        pool: e.pool_ref(),
                        match_id: *match_id,
                        entries: Vec::new(),
                    })
                    .entries
                    .push(*id);
            }
        }
        Ok(by_match.into_values().collect())
    }

    async fn finish_game(&self, tenant: &TenantId, game: &GameId) -> StoreResult<bool> {
        let mut inner = self.lock();
        let Some(players) = inner.games.remove(&(tenant.clone(), game.clone())) else {
            return Ok(false);
        };
        for user in *players {
            let key = (tenant.clone(), user);
            if inner.active.get(&key).is_some_and(|g| &g.game_id == game) {
                inner.active.remove(&key);
            }
        }
        Ok(true)
    }

    async fn hold_players(
        &self,
        record: &MatchRecord,
        until: Millis,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut inner = self.lock();
        let keys = [&record.white, &record.black]
            .map(|side| (record.tenant_id.clone(), side.user_id.clone()));
        let busy = keys
            .iter()
            .any(|k| inner.by_user.contains_key(k) || inner.active_game(k, now).is_some());
        if busy {
            return Ok(false);
        }
        for (key, side) in keys.into_iter().zip([&record.white, &record.black]) {
            let guard = record
                .guard_for(&side.user_id, until)
                .expect("a side of its own record");
            inner.guard_expiry.insert((until, key.clone()));
            inner.active.insert(key, Box::new(guard));
        }
        Ok(true)
    }

    async fn drop_hold(&self, record: &MatchRecord) -> StoreResult<()> {
        let mut inner = self.lock();
        for side in [&record.white, &record.black] {
            let key = (record.tenant_id.clone(), side.user_id.clone());
            if inner
                .active
                .get(&key)
                .is_some_and(|g| g.match_id == record.match_id)
            {
                inner.active.remove(&key);
            }
        }
        Ok(())
    }

    async fn restore_active_games(
        &self,
        games: &[(TenantId, UserId, ActiveGame)],
    ) -> StoreResult<()> {
        let mut inner = self.lock();
        for (tenant, user, game) in games {
            let key = (tenant.clone(), user.clone());
            inner.guard_expiry.insert((game.until, key.clone()));
            inner.active.insert(key, Box::new(game.clone()));
            inner.games.insert(
                (tenant.clone(), game.game_id.clone()),
                Box::new([user.clone(), game.opponent.user_id.clone()]),
            );
        }
        Ok(())
    }

    async fn recent_waits(&self, pool: &PoolRef) -> StoreResult<Vec<Millis>> {
        let inner = self.lock();
        Ok(inner
            .pools
            .get(pool)
            .map(|p| p.recent_waits.iter().copied().collect())
            .unwrap_or_default())
    }

    async fn pool_stats(&self, pool: &PoolRef, since: Millis) -> StoreResult<PoolStats> {
        let inner = self.lock();
        let Some(p) = inner.pools.get(pool) else {
            return Ok(PoolStats::default());
        };
        let from = stats_bucket(since);
        let (matches, timeouts) = p
            .outcomes
            .iter()
            .filter(|(b, _, _)| *b >= from)
            .fold((0, 0), |(m, t), (_, bm, bt)| (m + bm, t + bt));
        Ok(PoolStats {
            waiting: p.searching.len() as u64,
            oldest_enqueued_at: p.searching.first().map(|(at, _)| *at),
            recent_waits: p.recent_waits.iter().copied().collect(),
            recent_gaps: p.recent_gaps.iter().copied().collect(),
            matches,
            timeouts,
        })
    }

    async fn known_pools(&self) -> StoreResult<Vec<PoolRef>> {
        Ok(self.lock().pools.keys().cloned().collect())
    }

    async fn idempotent_answer(
        &self,
        scope: &IdempotencyScope,
        now: Millis,
    ) -> StoreResult<Option<StoredAnswer>> {
        let inner = self.lock();
        Ok(inner
            .answers
            .get(scope)
            .filter(|(_, expires)| *expires > now)
            .map(|(a, _)| a.clone()))
    }

    async fn save_idempotent_answer(
        &self,
        scope: &IdempotencyScope,
        answer: StoredAnswer,
        expires_at: Millis,
    ) -> StoreResult<StoredAnswer> {
        let mut inner = self.lock();
        let now = crate::domain::now_millis();
        let slot = inner
            .answers
            .entry(scope.clone())
            .or_insert_with(|| (answer.clone(), expires_at));
        if slot.1 <= now {
            *slot = (answer, expires_at);
        }
        let (kept, expires) = slot.clone();
        inner.answer_expiry.insert((expires, scope.clone()));
        Ok(kept)
    }

    async fn purge(&self, before: Millis, now: Millis) -> StoreResult<usize> {
        let mut inner = self.lock();
        let mut purged = 0;
        while let Some((at, _)) = inner.finished.front() {
            if *at >= before {
                break;
            }
            let (_, id) = inner.finished.pop_front().expect("front exists");
            if inner
                .entries
                .get(&id)
                .is_some_and(|e| !e.status.is_waiting())
            {
                inner.entries.remove(&id);
                purged += 1;
            }
        }
        while let Some((until, _)) = inner.guard_expiry.first() {
            if *until > now {
                break;
            }
            let (until, key) = inner.guard_expiry.pop_first().expect("first exists");
            // Only a guard that still ends then: a newer one may have replaced it.
            if inner.active.get(&key).is_some_and(|g| g.until == until) {
                let game = inner.active.remove(&key).expect("checked").game_id;
                inner.games.remove(&(key.0, game));
                purged += 1;
            }
        }
        while let Some((expires, _)) = inner.answer_expiry.first() {
            if *expires > now {
                break;
            }
            let (expires, scope) = inner.answer_expiry.pop_first().expect("first exists");
            if inner
                .answers
                .get(&scope)
                .is_some_and(|(_, e)| *e == expires)
            {
                inner.answers.remove(&scope);
                purged += 1;
            }
        }
        Ok(purged)
    }

    async fn lease_pool(&self, pool: &PoolRef, holder: &str, ttl_ms: Millis) -> StoreResult<bool> {
        let mut inner = self.lock();
        let now = crate::domain::now_millis();
        match inner.leases.get(pool) {
            Some((other, until)) if other != holder && *until > now => Ok(false),
            _ => {
                inner
                    .leases
                    .insert(pool.clone(), (holder.to_owned(), now + ttl_ms));
                Ok(true)
            }
        }
    }

    async fn release_leases(&self, pools: &[PoolRef], holder: &str) -> StoreResult<()> {
        let mut inner = self.lock();
        for pool in pools {
            if inner.leases.get(pool).is_some_and(|(h, _)| h == holder) {
                inner.leases.remove(pool);
            }
        }
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}
