//! In-memory [`QueueStore`]: the embedded default's hot state.
//!
//! One `std::sync::Mutex` guards everything. That is what makes every
//! method atomic, and it is enough: no method awaits while holding it and
//! each does a handful of hash-map operations. Two choices keep the time it
//! is held short even when the maps grow: entries are boxed (a table resize
//! moves small slots) and maps use foldhash (entry ids are 128-bit ULIDs).
//! Expiries are kept in time-ordered queues, so a purge never scans.
//!
//! Memory per waiting entry is kept small (issue 6, ≤ 512 bytes at 1M
//! entries): an entry is stored as a `StoredEntry` whose match outcome,
//! empty while searching, is one boxed optional part, and the per-user
//! index holds only (hash, entry id), comparing the entry's own ids on
//! lookup instead of keeping a second copy of them.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{
    CancelOutcome, EntryStore, GuardStore, JoinOutcome, LeaseStore, PairingStore, PoolStats,
    PoolStatsStore, QueueStore, RECENT_GAPS, Reservation, STATS_BUCKET_MS, STATS_KEPT_MS,
    StaleReservation, StoreError, StoreResult, Waiting, feed::EntryFeed, stats_bucket,
};
use crate::domain::{
    ActiveGame, Deviation, EndReason, EntryStatus, GameId, MatchId, MatchIntent, MatchRecord,
    Millis, Opponent, PoolKey, PoolRef, QueueEntry, QueueEntryId, Rating, RatingRange, TenantId,
    TimeControl, UserId, Username,
};

/// Finished entries or lapsed guards one purge drops per hold of the lock.
const PURGE_SLICE: usize = 10_000;

type UserKey = (TenantId, UserId);
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Default)]
pub struct MemoryQueueStore {
    inner: Mutex<Inner>,
}

/// An entry as the store keeps it: what a searching entry needs inline,
/// strings without spare capacity, the rest boxed and absent until used.
struct StoredEntry {
    id: QueueEntryId,
    tenant_id: TenantId,
    user_id: UserId,
    username: Option<Username>,
    pool: PoolKey,
    rating: Rating,
    status: EntryStatus,
    enqueued_at: Millis,
    updated_at: Millis,
    last_seen_at: Millis,
    request_id: Option<Box<str>>,
    client_metadata: Option<Box<str>>,
    reason: Option<EndReason>,
    rating_range: Option<RatingRange>,
    rating_deviation: Deviation,
    /// The other time controls it is listed in (empty for most).
    also: Box<[TimeControl]>,
    outcome: Option<Box<Outcome>>,
}

/// The part of an entry its match fills in.
#[derive(Default)]
struct Outcome {
    match_id: Option<MatchId>,
    reserved_until: Option<Millis>,
    game_id: Option<GameId>,
    opponent: Option<Opponent>,
}

impl StoredEntry {
    fn new(e: QueueEntry) -> Self {
        let outcome = (e.match_id.is_some()
            || e.reserved_until.is_some()
            || e.game_id.is_some()
            || e.opponent.is_some())
        .then(|| {
            Box::new(Outcome {
                match_id: e.match_id,
                reserved_until: e.reserved_until,
                game_id: e.game_id,
                opponent: e.opponent,
            })
        });
        Self {
            id: e.id,
            tenant_id: e.tenant_id,
            user_id: e.user_id,
            username: e.username,
            pool: e.pool,
            rating: e.rating,
            status: e.status,
            enqueued_at: e.enqueued_at,
            updated_at: e.updated_at,
            last_seen_at: e.last_seen_at,
            request_id: e.request_id.map(String::into_boxed_str),
            client_metadata: e.client_metadata.map(String::into_boxed_str),
            reason: e.reason,
            rating_range: e.rating_range,
            rating_deviation: e.rating_deviation,
            also: e.also.into_boxed_slice(),
            outcome,
        }
    }

    /// The entry as callers see it.
    fn to_entry(&self) -> QueueEntry {
        let outcome = self.outcome.as_deref();
        QueueEntry {
            id: self.id,
            tenant_id: self.tenant_id.clone(),
            user_id: self.user_id.clone(),
            username: self.username.clone(),
            pool: self.pool,
            rating: self.rating,
            status: self.status,
            enqueued_at: self.enqueued_at,
            updated_at: self.updated_at,
            last_seen_at: self.last_seen_at,
            request_id: self.request_id.as_deref().map(str::to_owned),
            client_metadata: self.client_metadata.as_deref().map(str::to_owned),
            match_id: outcome.and_then(|o| o.match_id),
            reserved_until: outcome.and_then(|o| o.reserved_until),
            game_id: outcome.and_then(|o| o.game_id.clone()),
            opponent: outcome.and_then(|o| o.opponent.clone()),
            reason: self.reason,
            rating_range: self.rating_range,
            rating_deviation: self.rating_deviation,
            also: self.also.to_vec(),
        }
    }

    fn pool_ref(&self) -> PoolRef {
        PoolRef {
            tenant_id: self.tenant_id.clone(),
            key: self.pool,
        }
    }

    fn in_pool(&self, pool: &PoolRef) -> bool {
        self.pool == pool.key && self.tenant_id == pool.tenant_id
    }

    /// Every pool it is listed in while searching: its own, then the other
    /// time controls it waits in.
    fn listed_in(&self) -> impl Iterator<Item = PoolRef> + '_ {
        crate::domain::listed_pools(&self.tenant_id, self.pool, &self.also)
    }

    fn is_user(&self, tenant: &TenantId, user: &UserId) -> bool {
        &self.user_id == user && &self.tenant_id == tenant
    }

    fn match_id(&self) -> Option<&MatchId> {
        self.outcome.as_ref()?.match_id.as_ref()
    }

    fn reserved_until(&self) -> Option<Millis> {
        self.outcome.as_ref()?.reserved_until
    }

    fn outcome_mut(&mut self) -> &mut Outcome {
        self.outcome.get_or_insert_default()
    }

    /// Forgets the reservation (match id and deadline); a match outcome
    /// without them keeps the rest.
    fn clear_reservation(&mut self) {
        if let Some(o) = &mut self.outcome {
            o.match_id = None;
            o.reserved_until = None;
            if o.game_id.is_none() && o.opponent.is_none() {
                self.outcome = None;
            }
        }
    }
}

/// The one waiting entry of each user, found by (tenant, user): the table
/// keeps only (hash of the two, entry id); a lookup compares the entry's
/// own ids, so the strings are not stored twice.
#[derive(Default)]
struct UserIndex<S = foldhash::fast::RandomState> {
    table: hashbrown::HashTable<(u64, QueueEntryId)>,
    hasher: S,
}

impl<S: std::hash::BuildHasher> UserIndex<S> {
    fn hash(&self, tenant: &TenantId, user: &UserId) -> u64 {
        self.hasher.hash_one((tenant.as_str(), user.as_str()))
    }

    fn get(
        &self,
        entries: &HashMap<QueueEntryId, Box<StoredEntry>>,
        tenant: &TenantId,
        user: &UserId,
    ) -> Option<QueueEntryId> {
        let hash = self.hash(tenant, user);
        self.table
            .find(hash, |(h, id)| {
                *h == hash && entries.get(id).is_some_and(|e| e.is_user(tenant, user))
            })
            .map(|(_, id)| *id)
    }

    /// Indexes `entry`; its user must not be indexed yet.
    fn insert(&mut self, entry: &StoredEntry) {
        let hash = self.hash(&entry.tenant_id, &entry.user_id);
        self.table
            .insert_unique(hash, (hash, entry.id), |(h, _)| *h);
    }

    fn remove(&mut self, entry: &StoredEntry) {
        let hash = self.hash(&entry.tenant_id, &entry.user_id);
        if let Ok(found) = self.table.find_entry(hash, |(_, id)| *id == entry.id) {
            found.remove();
        }
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<QueueEntryId, Box<StoredEntry>>,
    /// The one waiting entry of each user.
    by_user: UserIndex,
    pools: HashMap<PoolRef, Pool>,
    /// Reserved entries, for finding stale reservations without a scan.
    reserved: BTreeSet<QueueEntryId>,
    active: HashMap<UserKey, Box<ActiveGame>>,
    /// Players of each guarded game.
    games: HashMap<(TenantId, GameId), Box<[UserId; 2]>>,
    /// Entries that reached a final status, in the order they did.
    finished: VecDeque<(Millis, QueueEntryId)>,
    /// Guard deadlines, soonest first (a guard may have been lifted since).
    guard_expiry: BTreeSet<(Millis, UserKey)>,
    /// Pool leases: holder and deadline (wall clock).
    leases: HashMap<PoolRef, (String, Millis)>,
    /// Whether the guards were rebuilt from the durable store since this
    /// store was made (a new process starts with none).
    guards_intact: bool,
    /// Where entries that reach a final status are announced.
    feed: Arc<EntryFeed>,
}

#[derive(Default)]
struct Pool {
    /// Searching entries, ordered by (enqueued_at, id): oldest first.
    searching: BTreeSet<(Millis, QueueEntryId)>,
    reserved: usize,
    /// Waits of the latest matched players, with their ratings.
    recent_waits: VecDeque<(Millis, Rating)>,
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

    /// Takes a searching entry out of the waiting set of every pool it is
    /// listed in.
    fn unlist(&mut self, id: &QueueEntryId) {
        let Some(entry) = self.entries.get(id) else {
            return;
        };
        for pool in entry.listed_in() {
            if let Some(p) = self.pools.get_mut(&pool) {
                p.searching.remove(&(entry.enqueued_at, entry.id));
            }
        }
    }

    /// Puts a searching entry in the waiting set of every pool it waits in.
    fn list(&mut self, id: &QueueEntryId) {
        let Some(entry) = self.entries.get(id) else {
            return;
        };
        let at = (entry.enqueued_at, entry.id);
        let pools: Vec<PoolRef> = entry.listed_in().collect();
        for pool in pools {
            self.pool(&pool).searching.insert(at);
        }
    }

    /// Moves a waiting entry to a final status (and why, when it ended
    /// without a match), drops the user's index and announces the change.
    fn finish(
        &mut self,
        id: &QueueEntryId,
        status: EntryStatus,
        reason: Option<EndReason>,
        now: Millis,
    ) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        entry.status = status;
        entry.reason = reason;
        entry.updated_at = now;
        self.feed.changed(id, now);
        if let Some(o) = &mut entry.outcome {
            o.reserved_until = None;
        }
        self.by_user.remove(entry);
        self.finished.push_back((now, *id));
    }

    /// A copy of an entry, to hand to a caller.
    fn copy(&self, id: &QueueEntryId) -> Option<QueueEntry> {
        self.entries.get(id).map(|e| e.to_entry())
    }

    /// The user's waiting entry.
    fn user_entry(&self, tenant: &TenantId, user: &UserId) -> Option<&StoredEntry> {
        let id = self.by_user.get(&self.entries, tenant, user)?;
        self.entries.get(&id).map(|e| &**e)
    }

    fn set_reserved(&mut self, id: &QueueEntryId, reserved: bool) {
        if reserved {
            self.reserved.insert(*id);
        } else {
            self.reserved.remove(id);
        }
    }

    /// Moves the searching entries of `ids` to `status` (a time-out is
    /// counted in the pool's figures); answers the entries it changed.
    fn end_searching(
        &mut self,
        pool: &PoolRef,
        ids: &[QueueEntryId],
        status: EntryStatus,
        reason: EndReason,
        now: Millis,
    ) -> Vec<QueueEntry> {
        let mut changed = Vec::new();
        for id in ids {
            let Some(entry) = self.entries.get(id) else {
                continue;
            };
            if entry.status != EntryStatus::Searching || !entry.in_pool(pool) {
                continue;
            }
            self.unlist(id);
            self.finish(id, status, Some(reason), now);
            changed.extend(self.copy(id));
        }
        if status == EntryStatus::TimedOut && !changed.is_empty() {
            self.pool(pool).count(now, 0, changed.len() as u64);
        }
        self.drop_empty_pool(pool);
        changed
    }

    /// Drops up to `limit` finished entries older than `before` and guards
    /// lapsed at `now`; answers how many went and whether more are due.
    fn purge_some(&mut self, before: Millis, now: Millis, limit: usize) -> (usize, bool) {
        let mut purged = 0;
        let mut seen = 0;
        while let Some((at, _)) = self.finished.front() {
            if *at >= before || seen == limit {
                break;
            }
            seen += 1;
            let (_, id) = self.finished.pop_front().expect("front exists");
            if self
                .entries
                .get(&id)
                .is_some_and(|e| !e.status.is_waiting())
            {
                self.entries.remove(&id);
                purged += 1;
            }
        }
        while let Some((until, _)) = self.guard_expiry.first() {
            if *until > now || seen == limit {
                break;
            }
            seen += 1;
            let (until, key) = self.guard_expiry.pop_first().expect("first exists");
            // Only a guard that still ends then: a newer one may have replaced it.
            if self.active.get(&key).is_some_and(|g| g.until == until) {
                if let Some(game) = self.active.remove(&key).expect("checked").game_id {
                    self.games.remove(&(key.0, game));
                }
                purged += 1;
            }
        }
        (purged, seen == limit)
    }

    /// Gives memory back after a flood: a table or queue with less than a
    /// quarter of its capacity in use is shrunk (tables keep their largest
    /// size otherwise, and the node's memory would never come down).
    fn shrink_if_sparse(&mut self) {
        fn sparse(len: usize, capacity: usize) -> bool {
            capacity > 1_024 && len * 4 < capacity
        }
        if sparse(self.entries.len(), self.entries.capacity()) {
            self.entries.shrink_to_fit();
        }
        if sparse(self.by_user.table.len(), self.by_user.table.capacity()) {
            self.by_user.table.shrink_to_fit(|(h, _)| *h);
        }
        if sparse(self.finished.len(), self.finished.capacity()) {
            self.finished.shrink_to_fit();
        }
        if sparse(self.active.len(), self.active.capacity()) {
            self.active.shrink_to_fit();
        }
        if sparse(self.games.len(), self.games.capacity()) {
            self.games.shrink_to_fit();
        }
        if sparse(self.pools.len(), self.pools.capacity()) {
            self.pools.shrink_to_fit();
        }
    }

    fn drop_empty_pool(&mut self, pool: &PoolRef) {
        if self.pools.get(pool).is_some_and(Pool::is_idle) {
            self.pools.remove(pool);
        }
    }
}

#[async_trait]
impl EntryStore for MemoryQueueStore {
    async fn join(&self, entry: QueueEntry, now: Millis) -> StoreResult<JoinOutcome> {
        let mut inner = self.lock();
        if !inner.guards_intact {
            return Err(StoreError::GuardsLost);
        }
        if let Some(existing) = inner.user_entry(&entry.tenant_id, &entry.user_id) {
            let existing = existing.to_entry();
            return Ok(if existing.same_search(&entry) {
                JoinOutcome::Existing(existing)
            } else {
                JoinOutcome::AlreadyInQueue(existing)
            });
        }
        let key = (entry.tenant_id.clone(), entry.user_id.clone());
        if let Some(game) = inner.active_game(&key, now) {
            return Ok(JoinOutcome::ActiveGame(game.clone()));
        }
        let stored = Box::new(StoredEntry::new(entry.clone()));
        inner.by_user.insert(&stored);
        inner.entries.insert(entry.id, stored);
        inner.list(&entry.id);
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
        if !entry.is_user(tenant, user) {
            return Ok(None);
        }
        if entry.status.is_waiting() {
            entry.last_seen_at = entry.last_seen_at.max(now);
        }
        Ok(Some(entry.to_entry()))
    }

    async fn requeue(
        &self,
        pool: &PoolRef,
        id: &QueueEntryId,
        game: &GameId,
        now: Millis,
    ) -> StoreResult<Option<QueueEntry>> {
        let mut inner = self.lock();
        if !inner.guards_intact {
            return Err(StoreError::GuardsLost);
        }
        let Some(e) = inner.entries.get(id) else {
            return Ok(None);
        };
        let matched_for_game = e.status == EntryStatus::Matched
            && e.pool_ref() == *pool
            && e.outcome.as_deref().and_then(|o| o.game_id.as_ref()) == Some(game);
        let key = (e.tenant_id.clone(), e.user_id.clone());
        if !matched_for_game
            || inner.user_entry(&key.0, &key.1).is_some()
            || inner.active_game(&key, now).is_some()
        {
            return Ok(None);
        }
        let e = inner.entries.get_mut(id).expect("checked above");
        e.status = EntryStatus::Searching;
        e.updated_at = now;
        e.last_seen_at = now;
        e.reason = None;
        e.outcome = None;
        inner.list(id);
        let Inner {
            entries, by_user, ..
        } = &mut *inner;
        by_user.insert(&entries[id]);
        inner.feed.changed(id, now);
        Ok(inner.copy(id))
    }

    async fn user_entry(
        &self,
        tenant: &TenantId,
        user: &UserId,
    ) -> StoreResult<Option<QueueEntry>> {
        Ok(self
            .lock()
            .user_entry(tenant, user)
            .map(StoredEntry::to_entry))
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
        if !entry.is_user(tenant, user) {
            return Ok(CancelOutcome::NotFound);
        }
        match entry.status {
            EntryStatus::Searching => {}
            EntryStatus::Reserved | EntryStatus::Matched => return Ok(CancelOutcome::CannotCancel),
            EntryStatus::Cancelled | EntryStatus::TimedOut => return Ok(CancelOutcome::NotFound),
        }
        inner.unlist(id);
        inner.finish(id, EntryStatus::Cancelled, Some(EndReason::Player), now);
        let cancelled = inner.copy(id).expect("entry exists");
        Ok(CancelOutcome::Cancelled(Box::new(cancelled)))
    }

    async fn touch(&self, pool: &PoolRef, seen: &[(QueueEntryId, Millis)]) -> StoreResult<()> {
        let mut inner = self.lock();
        for (id, at) in seen {
            if let Some(entry) = inner.entries.get_mut(id)
                && entry.status.is_waiting()
                && entry.in_pool(pool)
            {
                entry.last_seen_at = entry.last_seen_at.max(*at);
            }
        }
        Ok(())
    }

    fn feed(&self) -> Arc<EntryFeed> {
        self.lock().feed.clone()
    }
}

#[async_trait]
impl PairingStore for MemoryQueueStore {
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
                home: (!e.in_pool(pool)).then_some(e.pool),
                id: e.id,
                user_id: e.user_id.clone(),
                username: e.username.clone(),
                rating: e.rating,
                enqueued_at: e.enqueued_at,
                last_seen_at: e.last_seen_at,
                request_id: e.request_id.as_deref().map(str::to_owned),
                rating_range: e.rating_range,
                rating_deviation: e.rating_deviation,
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
                    .is_some_and(|e| e.status == EntryStatus::Searching && e.in_pool(pool))
            };
            let ok = searching(&r.a) && searching(&r.b);
            if ok {
                let ids = if r.a == r.b {
                    vec![&r.a]
                } else {
                    vec![&r.a, &r.b]
                };
                for &id in &ids {
                    inner.unlist(id);
                    let entry = inner.entries.get_mut(id).expect("checked above");
                    entry.status = EntryStatus::Reserved;
                    let outcome = entry.outcome_mut();
                    outcome.match_id = Some(r.match_id);
                    outcome.reserved_until = Some(until);
                    entry.updated_at = now;
                    inner.set_reserved(id, true);
                }
                inner.pool(pool).reserved += ids.len();
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
            // The pools where an entry of the match was matched now (two
            // for a match across regions).
            let mut matched_in: Vec<PoolRef> = Vec::with_capacity(2);
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
                    e.status == EntryStatus::Reserved && e.match_id() == Some(&record.match_id)
                });
                if !reserved_for_this {
                    continue;
                }
                let entry = inner.entries.get_mut(entry_id).expect("checked above");
                let outcome = entry.outcome_mut();
                outcome.game_id = Some(record.game_id.clone());
                outcome.opponent = Some(opponent);
                let (wait, rating, pool) =
                    (now - entry.enqueued_at, entry.rating, entry.pool_ref());
                inner.finish(entry_id, EntryStatus::Matched, None, now);
                // Matched when the match was made, as its record says.
                if let Some(e) = inner.entries.get_mut(entry_id) {
                    e.updated_at = record.created_at;
                }
                inner.set_reserved(entry_id, false);
                let p = inner.pool(&pool);
                p.reserved = p.reserved.saturating_sub(1);
                p.recent_waits.push_front((wait.max(0), rating));
                p.recent_waits.truncate(super::RECENT_WAITS);
                if !matched_in.contains(&pool) {
                    matched_in.push(pool);
                }
            }
            for pool in matched_in {
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
                if entry.status != EntryStatus::Reserved || entry.match_id() != Some(&r.match_id) {
                    continue;
                }
                entry.status = EntryStatus::Searching;
                entry.clear_reservation();
                entry.updated_at = now;
                let pool = entry.pool_ref();
                inner.set_reserved(id, false);
                let p = inner.pool(&pool);
                p.reserved = p.reserved.saturating_sub(1);
                inner.list(id);
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
        Ok(self.lock().end_searching(
            pool,
            ids,
            EntryStatus::TimedOut,
            EndReason::MaxQueueTime,
            now,
        ))
    }

    async fn cancel_entries(
        &self,
        pool: &PoolRef,
        ids: &[QueueEntryId],
        reason: EndReason,
        now: Millis,
    ) -> StoreResult<Vec<QueueEntry>> {
        Ok(self
            .lock()
            .end_searching(pool, ids, EntryStatus::Cancelled, reason, now))
    }

    async fn stale_reservations(&self, now: Millis) -> StoreResult<Vec<StaleReservation>> {
        let inner = self.lock();
        Ok(StaleReservation::pair_up(inner.reserved.iter().filter_map(
            |id| {
                let e = inner.entries.get(id)?;
                let (until, match_id) = (e.reserved_until()?, e.match_id()?);
                (until < now).then(|| (e.pool_ref(), *match_id, *id))
            },
        )))
    }
}

#[async_trait]
impl GuardStore for MemoryQueueStore {
    async fn finish_game(&self, tenant: &TenantId, game: &GameId) -> StoreResult<bool> {
        let mut inner = self.lock();
        let Some(players) = inner.games.remove(&(tenant.clone(), game.clone())) else {
            return Ok(false);
        };
        for user in *players {
            let key = (tenant.clone(), user);
            if inner
                .active
                .get(&key)
                .is_some_and(|g| g.game_id.as_ref() == Some(game))
            {
                inner.active.remove(&key);
            }
        }
        Ok(true)
    }

    async fn hold_players(
        &self,
        intent: &MatchIntent,
        until: Millis,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut inner = self.lock();
        if !inner.guards_intact {
            return Err(StoreError::GuardsLost);
        }
        let keys = [&intent.white, &intent.black]
            .map(|side| (intent.tenant_id.clone(), side.user_id.clone()));
        let busy = keys
            .iter()
            .any(|k| inner.user_entry(&k.0, &k.1).is_some() || inner.active_game(k, now).is_some());
        if busy {
            return Ok(false);
        }
        for (key, side) in keys.into_iter().zip([&intent.white, &intent.black]) {
            let guard = intent
                .guard_for(&side.user_id, until)
                .expect("a side of its own match");
            inner.guard_expiry.insert((until, key.clone()));
            inner.active.insert(key, Box::new(guard));
        }
        Ok(true)
    }

    async fn drop_hold(&self, intent: &MatchIntent) -> StoreResult<()> {
        let mut inner = self.lock();
        for side in [&intent.white, &intent.black] {
            let key = (intent.tenant_id.clone(), side.user_id.clone());
            if inner
                .active
                .get(&key)
                .is_some_and(|g| g.match_id == intent.match_id)
            {
                inner.active.remove(&key);
            }
        }
        Ok(())
    }

    async fn restore_active_games(
        &self,
        games: &[(TenantId, UserId, ActiveGame)],
        _now: Millis,
    ) -> StoreResult<()> {
        let mut inner = self.lock();
        for (tenant, user, game) in games {
            let key = (tenant.clone(), user.clone());
            if inner.active.contains_key(&key) {
                continue;
            }
            inner.guard_expiry.insert((game.until, key.clone()));
            inner.active.insert(key, Box::new(game.clone()));
            if let Some(game_id) = &game.game_id {
                inner.games.insert(
                    (tenant.clone(), game_id.clone()),
                    Box::new([user.clone(), game.opponent.user_id.clone()]),
                );
            }
        }
        Ok(())
    }

    async fn guards_intact(&self) -> StoreResult<bool> {
        Ok(self.lock().guards_intact)
    }

    async fn mark_guards_intact(&self) -> StoreResult<()> {
        self.lock().guards_intact = true;
        Ok(())
    }
}

#[async_trait]
impl PoolStatsStore for MemoryQueueStore {
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
            recent_waits: p.recent_waits.iter().map(|&(w, _)| w).collect(),
            recent_wait_ratings: p.recent_waits.iter().map(|&(_, r)| Some(r)).collect(),
            recent_gaps: p.recent_gaps.iter().copied().collect(),
            matches,
            timeouts,
        })
    }

    async fn known_pools(&self) -> StoreResult<Vec<PoolRef>> {
        Ok(self.lock().pools.keys().cloned().collect())
    }
}

#[async_trait]
impl LeaseStore for MemoryQueueStore {
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
}

#[async_trait]
impl QueueStore for MemoryQueueStore {
    async fn purge(&self, before: Millis, now: Millis) -> StoreResult<usize> {
        // In slices, letting go of the lock between them: after a flood a
        // purge may drop a million entries, and joins must not wait for all.
        let mut purged = 0;
        loop {
            let (n, more) = self.lock().purge_some(before, now, PURGE_SLICE);
            purged += n;
            if !more {
                break;
            }
            tokio::task::yield_now().await;
        }
        self.lock().shrink_if_sparse();
        Ok(purged)
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::now_millis;
    use std::hash::{BuildHasherDefault, Hasher};

    fn entry(user: &str) -> QueueEntry {
        QueueEntry::searching(
            TenantId::parse("t").unwrap(),
            UserId::parse(user).unwrap(),
            "standard_5+0_rated_GLOBAL".parse().unwrap(),
            1500,
            now_millis(),
        )
    }

    #[test]
    fn a_stored_entry_gives_back_the_entry_it_was_made_from() {
        let mut e = entry("alice");
        e.username = Username::sanitize("Alice");
        e.request_id = Some("req-1".into());
        e.client_metadata = Some(r#"{"a":1}"#.into());
        assert_eq!(StoredEntry::new(e.clone()).to_entry(), e);
        e.match_id = Some(MatchId::generate());
        e.reserved_until = Some(7);
        let mut stored = StoredEntry::new(e.clone());
        assert_eq!(stored.to_entry(), e);
        stored.clear_reservation();
        assert!(stored.outcome.is_none(), "an empty outcome is dropped");
        e.game_id = Some(GameId::parse("g1").unwrap());
        e.opponent = Some(Opponent {
            user_id: UserId::parse("bob").unwrap(),
            username: None,
            rating: 1400,
            time_control: None,
        });
        let mut stored = StoredEntry::new(e.clone());
        assert_eq!(stored.to_entry(), e);
        stored.clear_reservation();
        let kept = stored.to_entry();
        assert_eq!((kept.match_id, kept.reserved_until), (None, None));
        assert_eq!(kept.game_id, e.game_id, "the game outlives the reservation");
    }

    /// Every key hashes to 0: lookups must tell users apart by their ids.
    #[derive(Default)]
    struct Colliding;

    impl Hasher for Colliding {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, _: &[u8]) {}
    }

    #[test]
    fn the_user_index_tells_users_apart_when_their_hashes_collide() {
        let mut entries: HashMap<QueueEntryId, Box<StoredEntry>> = HashMap::default();
        let mut index = UserIndex::<BuildHasherDefault<Colliding>>::default();
        let users = ["alice", "bob", "carol"];
        for user in users {
            let stored = Box::new(StoredEntry::new(entry(user)));
            index.insert(&stored);
            entries.insert(stored.id, stored);
        }
        let tenant = TenantId::parse("t").unwrap();
        let find = |index: &UserIndex<_>, user: &str| {
            index
                .get(&entries, &tenant, &UserId::parse(user).unwrap())
                .map(|id| entries[&id].user_id.as_str().to_owned())
        };
        for user in users {
            assert_eq!(find(&index, user).as_deref(), Some(user));
        }
        assert_eq!(find(&index, "dave"), None);
        let bob = entries
            .values()
            .find(|e| e.user_id.as_str() == "bob")
            .unwrap();
        index.remove(bob);
        assert_eq!(find(&index, "bob"), None);
        assert_eq!(find(&index, "alice").as_deref(), Some("alice"));
        assert_eq!(find(&index, "carol").as_deref(), Some("carol"));
    }
}
