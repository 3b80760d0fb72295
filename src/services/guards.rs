//! The queue store's active-game guards, kept as a copy of the durable
//! store's claims.
//!
//! A guard answers "is this player in an unfinished game?" on every join
//! without touching the durable store. The queue store can lose them: an
//! in-memory store starts empty with every process, and a Redis can restart
//! empty or fail over to a replica that missed writes. So the queue store
//! refuses to admit anyone ([`StoreError::GuardsLost`]) until they are
//! rebuilt from the durable store — unfinished matches, and intents whose
//! game is being created — and marked intact. A rebuild runs once per
//! process at a time; callers wait for it, bounded.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::domain::{
    ActiveGame, Clock, GameId, MatchId, MatchIntent, MatchRecord, Millis, TenantId, UserId,
};
use crate::store::{DurableStore, GuardStore, StoreError, StoreResult};

/// How long an admission (a join, a hold, a player put back) waits for a
/// rebuild of the guards before it answers 503.
pub const REBUILD_WAIT: Duration = Duration::from_secs(5);

/// The outcome of the rebuild in progress (`None` while it runs).
type Progress = watch::Receiver<Option<Result<usize, String>>>;

pub struct Guards {
    store: Arc<dyn GuardStore>,
    durable: Arc<dyn DurableStore>,
    guard_ms: Millis,
    clock: Arc<dyn Clock>,
    /// The rebuild in progress, if any. A std lock: held to look or start,
    /// never across an await.
    running: Mutex<Option<Progress>>,
}

impl Guards {
    pub fn new(
        store: Arc<dyn GuardStore>,
        durable: Arc<dyn DurableStore>,
        guard_ms: Millis,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            durable,
            guard_ms,
            clock,
            running: Mutex::new(None),
        })
    }

    /// Lifts the guards of a finished game's players (see
    /// [`GuardStore::finish_game`]).
    pub async fn finish_game(&self, tenant: &TenantId, game: &GameId) -> StoreResult<bool> {
        self.store.finish_game(tenant, game).await
    }

    /// Keeps `user` of `tenant` out of matchmaking until the cooldown's
    /// end (a guard marked `cooldown`), unless a guard is in force already.
    pub async fn cool_down(
        &self,
        tenant: &TenantId,
        user: &UserId,
        cooldown: ActiveGame,
    ) -> StoreResult<()> {
        self.store
            .restore_active_games(
                &[(tenant.clone(), user.clone(), cooldown)],
                self.clock.now(),
            )
            .await
    }

    /// Runs `op`, a step of the queue store that admits a player (a join,
    /// a hold, a player put back): when the store answers that its guards
    /// may be lost, nobody is admitted until they are rebuilt from the
    /// durable store — rebuilds them (waiting at most [`REBUILD_WAIT`]),
    /// then runs `op` once more.
    pub async fn admitting<T, Fut>(self: &Arc<Self>, op: impl Fn() -> Fut) -> StoreResult<T>
    where
        Fut: std::future::Future<Output = StoreResult<T>>,
    {
        match op().await {
            Err(StoreError::GuardsLost) => {
                self.ensure_intact(REBUILD_WAIT).await?;
                op().await
            }
            other => other,
        }
    }

    /// Makes sure the guards are intact, rebuilding them if the queue store
    /// says they may be lost; waits at most `wait` for a rebuild. Answers
    /// how many guards were rebuilt (0 when they were intact).
    pub async fn ensure_intact(self: &Arc<Self>, wait: Duration) -> StoreResult<usize> {
        if self.store.guards_intact().await? {
            return Ok(0);
        }
        let mut progress = self.start();
        let outcome = tokio::time::timeout(wait, progress.wait_for(Option::is_some))
            .await
            .map_err(|_| {
                StoreError::Unavailable(
                    "the active-game guards are being rebuilt from the durable store".into(),
                )
            })?
            .map_err(|_| StoreError::Unavailable("the guard rebuild stopped".into()))?
            .clone();
        outcome
            .expect("waited for an outcome")
            .map_err(StoreError::Unavailable)
    }

    /// The rebuild in progress, or a new one.
    fn start(self: &Arc<Self>) -> Progress {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(progress) = running.as_ref().filter(|p| p.borrow().is_none()) {
            return progress.clone();
        }
        let (done, progress) = watch::channel(None);
        *running = Some(progress.clone());
        let guards = self.clone();
        tokio::spawn(async move {
            let outcome = guards.rebuild().await.map_err(|e| e.to_string());
            let _ = done.send(Some(outcome));
        });
        progress
    }

    /// The durable claims: intents whose game is being created, then
    /// unfinished matches. In that order: a claim only moves forward
    /// (intent → record, in one write), so one read after the other never
    /// misses a match that became a record in between, which the other
    /// order would (read the records, the intent becomes a record, read
    /// the intents: the match is in neither, and a rebuild would take its
    /// game for ended and lift its players' guards).
    async fn claims(&self, since: Millis) -> StoreResult<(Vec<MatchIntent>, Vec<MatchRecord>)> {
        let intents = self.durable.intents().await?;
        let records = self.durable.unfinished_matches(since).await?;
        Ok((intents, records))
    }

    /// Copies every player's claim into the queue store, then marks the
    /// guards intact. A guard already there is kept (it is newer); a game
    /// that finished (or an intent dropped) while this ran has its guards
    /// lifted again, since its finish may have come before this wrote them.
    async fn rebuild(&self) -> StoreResult<usize> {
        let started = std::time::Instant::now();
        let since = self.clock.now() - self.guard_ms;
        let (intents, records) = self.claims(since).await?;
        let mut guards: Vec<(TenantId, UserId, ActiveGame)> = Vec::new();
        let mut matches: Vec<MatchIntent> = Vec::with_capacity(records.len() + intents.len());
        for r in &records {
            let until = r.created_at + self.guard_ms;
            for user in [&r.white.user_id, &r.black.user_id] {
                if let Some(g) = r.guard_for(user, until) {
                    guards.push((r.tenant_id.clone(), user.clone(), g));
                }
            }
            matches.push(r.intent());
        }
        for i in &intents {
            let until = i.created_at + self.guard_ms;
            for user in i.players() {
                if let Some(g) = i.guard_for(user, until) {
                    guards.push((i.tenant_id.clone(), user.clone(), g));
                }
            }
            matches.push(i.clone());
        }

        self.store
            .restore_active_games(&guards, self.clock.now())
            .await?;
        let (intents_now, records_now) = self.claims(since).await?;
        let still: HashSet<MatchId> = intents_now
            .iter()
            .map(|i| i.match_id)
            .chain(records_now.iter().map(|r| r.match_id))
            .collect();
        for ended in matches.iter().filter(|m| !still.contains(&m.match_id)) {
            self.store.drop_hold(ended).await?;
        }
        // No-show cooldowns still running: not claims (their games are
        // over), but they keep their players out all the same. Read last,
        // so a game aborted while this ran (its guard dropped above) keeps
        // its cooldown.
        let cooldowns: Vec<(TenantId, UserId, ActiveGame)> = self
            .durable
            .cooldowns(self.clock.now())
            .await?
            .into_iter()
            .filter_map(|c| {
                let g = c.record.cooldown_for(&c.user_id, c.until)?;
                Some((c.record.tenant_id, c.user_id, g))
            })
            .collect();
        self.store
            .restore_active_games(&cooldowns, self.clock.now())
            .await?;
        self.store.mark_guards_intact().await?;
        tracing::info!(
            event = "guards_rebuilt",
            guards = guards.len(),
            cooldowns = cooldowns.len(),
            matches = records.len(),
            intents = intents.len(),
            took_ms = started.elapsed().as_secs_f64() * 1000.0,
            "active-game guards rebuilt from the durable store; admitting players"
        );
        Ok(guards.len() + cooldowns.len())
    }
}
