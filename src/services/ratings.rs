//! Ratings per speed and variant, read from the rating service when one is
//! configured, else (and as its fallback) from the local ratings table
//! (1500 when unknown).
//!
//! A join needs its player's rating, and reading a row per join would make
//! the database the bottleneck of every join. So each API node keeps a
//! copy of the ratings table in memory (only players with a rating; anyone
//! else is 1500):
//!
//! - in the embedded default this process is the local table's only writer:
//!   the copy, loaded once at start and written through on every change, is
//!   authoritative ([`RatingService::preloaded`]);
//! - with a shared store other nodes write too: the copy is a mirror
//!   ([`RatingService::mirrored`]) that [`RatingService::keep_fresh`]
//!   loads and then brings up to date every second by re-reading only the
//!   rows changed since its last look (`ratings_changed_at`). A change made
//!   through this node shows at once, one made through another node within
//!   about a second. Until the first load succeeds (the database may be
//!   down at start) joins read the store directly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::rating_api::{RatingApi, Read};
use crate::domain::{
    Deviation, MAX_DEVIATION, Millis, ParseError, RATING_RANGE, Rating, RatingPool, RatingSnapshot,
    Speed, TenantId, UserId,
};
use crate::store::{RatingChange, RatingStore, Ratings, StoreResult};

type Table = HashMap<(TenantId, UserId), Ratings>;

/// How often a mirror asks the store for changed rows.
const MIRROR_REFRESH: Duration = Duration::from_secs(1);

/// How far back each refresh looks before the newest change it has seen. A
/// change stamped just before the newest one but committed after the
/// previous look is still picked up; rows re-read are applied again,
/// harmlessly.
const MIRROR_LOOKBACK_MS: Millis = 5_000;

/// The in-memory copy of the ratings table.
struct RatingsCopy {
    table: RwLock<Table>,
    /// A mirror's newest `ratings_changed_at` seen; `None` until loaded.
    /// Always `Some` for an authoritative copy.
    newest: Mutex<Option<Millis>>,
    /// True when this process is the store's only writer.
    authoritative: bool,
}

impl RatingsCopy {
    fn new(authoritative: bool) -> Self {
        Self {
            table: RwLock::default(),
            newest: Mutex::new(None),
            authoritative,
        }
    }

    fn newest(&self) -> Option<Millis> {
        *self.newest.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn loaded(&self) -> bool {
        self.newest().is_some()
    }

    fn get(&self, tenant: &TenantId, user: &UserId) -> Ratings {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(tenant.clone(), user.clone()))
            .copied()
            .unwrap_or_default()
    }

    fn put(&self, tenant: &TenantId, user: &UserId, ratings: Ratings) {
        self.table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((tenant.clone(), user.clone()), ratings);
    }

    /// Applies rows read from the store; answers how many.
    fn apply(&self, changes: Vec<RatingChange>) -> usize {
        let count = changes.len();
        let newest = changes.iter().map(|c| c.changed_at).max();
        {
            let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
            for c in changes {
                table.insert((c.tenant_id, c.user_id), c.ratings);
            }
        }
        let mut seen = self.newest.lock().unwrap_or_else(|e| e.into_inner());
        *seen = Some(
            seen.unwrap_or(Millis::MIN)
                .max(newest.unwrap_or(Millis::MIN)),
        );
        count
    }
}

#[derive(Clone)]
pub struct RatingService {
    store: Arc<dyn RatingStore>,
    copy: Arc<RatingsCopy>,
    /// The platform's rating service, read first when configured.
    api: Option<Arc<RatingApi>>,
}

impl RatingService {
    /// Loads the whole table into memory; only for a store no other
    /// process writes.
    pub async fn preloaded(store: Arc<dyn RatingStore>) -> StoreResult<Self> {
        let copy = RatingsCopy::new(true);
        copy.apply(store.ratings_changed_since(None).await?);
        Ok(Self {
            store,
            copy: Arc::new(copy),
            api: None,
        })
    }

    /// A mirror of a store other processes write too; empty (joins read
    /// the store) until [`RatingService::keep_fresh`] has loaded it.
    pub fn mirrored(store: Arc<dyn RatingStore>) -> Self {
        Self {
            store,
            copy: Arc::new(RatingsCopy::new(false)),
            api: None,
        }
    }

    /// Reads the rating service first; the local table becomes its
    /// fallback.
    pub fn with_api(mut self, api: Arc<RatingApi>) -> Self {
        self.api = Some(api);
        self
    }

    pub fn api(&self) -> Option<&RatingApi> {
        self.api.as_deref()
    }

    /// Brings a mirror up to date: everything on the first call, then the
    /// rows changed since the newest change seen (minus a look-back).
    /// Answers the rows read.
    async fn refresh(&self) -> StoreResult<usize> {
        let since = self
            .copy
            .newest()
            .map(|n| n.saturating_sub(MIRROR_LOOKBACK_MS));
        let changes = self.store.ratings_changed_since(since).await?;
        Ok(self.copy.apply(changes))
    }

    /// Refreshes a mirror every second until `stop`; a failed refresh is
    /// logged and retried on the next tick.
    pub async fn keep_fresh(self, mut stop: watch::Receiver<bool>) {
        if self.copy.authoritative {
            return;
        }
        let mut tick = tokio::time::interval(MIRROR_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            let first = !self.copy.loaded();
            match self.refresh().await {
                Ok(rows) => {
                    if first {
                        tracing::info!(players = rows, "ratings loaded into memory");
                    }
                    if failing {
                        tracing::info!("ratings mirror refreshing again");
                    }
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "ratings mirror refresh failed; retrying every second");
                    }
                    failing = true;
                }
            }
        }
    }

    /// The player's rating in `pool`: from the rating service when one is
    /// configured; when it cannot be read, its last answer, else the local
    /// table, else 1500 (each fallback counted). Never fails because the
    /// rating service does.
    pub async fn rating(
        &self,
        tenant: &TenantId,
        user: &UserId,
        pool: RatingPool,
    ) -> StoreResult<Rating> {
        Ok(self.snapshot(tenant, user, pool).await?.rating)
    }

    /// The player's rating in `pool` with its deviation (350 when none is
    /// known), from where [`RatingService::rating`] reads it.
    pub async fn snapshot(
        &self,
        tenant: &TenantId,
        user: &UserId,
        pool: RatingPool,
    ) -> StoreResult<RatingSnapshot> {
        let Some(api) = &self.api else {
            return Ok(self
                .local(tenant, user, pool)
                .await?
                .unwrap_or(RatingSnapshot::UNRATED));
        };
        let why = match api.read(tenant, user, pool).await {
            Read::Fresh(snapshot) => return Ok(snapshot),
            Read::Unavailable {
                why,
                stale: Some(snapshot),
            } => {
                crate::observe::rating_fallback(why.as_str(), "cache");
                return Ok(snapshot);
            }
            Read::Unavailable { why, stale: None } => why,
        };
        let local = self.local(tenant, user, pool).await?;
        crate::observe::rating_fallback(
            why.as_str(),
            if local.is_some() { "local" } else { "default" },
        );
        Ok(local.unwrap_or(RatingSnapshot::UNRATED))
    }

    /// The local table's rating in `pool` with its deviation, from the
    /// copy once it is loaded; `None` when never set.
    async fn local(
        &self,
        tenant: &TenantId,
        user: &UserId,
        pool: RatingPool,
    ) -> StoreResult<Option<RatingSnapshot>> {
        let ratings = if self.copy.loaded() {
            self.copy.get(tenant, user)
        } else {
            self.store.ratings(tenant, user).await?
        };
        Ok(ratings.snapshot(pool))
    }

    /// What is stored (from the copy only when it is authoritative, so an
    /// operator reads the store).
    pub async fn ratings(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Ratings> {
        let ratings = if self.copy.authoritative {
            self.copy.get(tenant, user)
        } else {
            self.store.ratings(tenant, user).await?
        };
        Ok(ratings)
    }

    /// Sets the given pools (store first, then the copy); answers what is
    /// stored after.
    pub async fn set(
        &self,
        tenant: &TenantId,
        user: &UserId,
        update: &Ratings,
    ) -> StoreResult<Ratings> {
        let now = self.store.set_ratings(tenant, user, update).await?;
        self.copy.put(tenant, user, now);
        Ok(now)
    }
}

/// Parses an update (SPEC §8): keys are a speed (`"blitz"`: the standard
/// variant's) or a pool `{speed}_{variant}` (`"blitz_chess960"`), values
/// integers within [`RATING_RANGE`], or `{"rating": 1620, "rd": 80}` with
/// the rating's deviation (a number within 0–[`MAX_DEVIATION`], rounded);
/// at least one. A bare rating leaves the stored deviation as it is.
pub fn parse_update(
    body: &serde_json::Map<String, serde_json::Value>,
) -> Result<Ratings, ParseError> {
    if body.is_empty() {
        return Err(ParseError::new(
            "ratings",
            "give at least one of bullet, blitz, rapid, classical (the standard variant), or a pool such as blitz_chess960",
        ));
    }
    let mut update = Ratings::default();
    for (key, value) in body {
        let (pool, field) = match key.parse::<Speed>() {
            Ok(speed) => (RatingPool::standard(speed), speed.as_str()),
            Err(_) => (
                key.parse::<RatingPool>().map_err(|_| {
                    ParseError::new(
                        "ratings",
                        format!(
                            "unknown key {key:?}: give a speed (bullet, blitz, rapid, classical) or {{speed}}_{{variant}} such as blitz_chess960"
                        ),
                    )
                })?,
                "ratings",
            ),
        };
        let (value, deviation) = match value {
            serde_json::Value::Object(o) => rated_object(o, key, field)?,
            bare => (bare, None),
        };
        // 1620.0 is an integer too (JSON Schema's and JavaScript's view).
        let whole = value.as_i64().or_else(|| {
            value
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= 1e9)
                .map(|f| f as i64)
        });
        let rating = whole
            .and_then(|v| Rating::try_from(v).ok())
            .filter(|v| RATING_RANGE.contains(v))
            .ok_or_else(|| {
                ParseError::new(
                    field,
                    format!(
                        "{key} must be an integer between {} and {}",
                        RATING_RANGE.start(),
                        RATING_RANGE.end()
                    ),
                )
            })?;
        update.set(pool, rating);
        if let Some(d) = deviation {
            update.set_deviation(pool, d);
        }
    }
    Ok(update)
}

/// A rating given with its deviation: `{"rating": …, "rd": …}` (`rd`
/// optional); answers the rating's JSON value and the deviation.
fn rated_object<'a>(
    o: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
    field: &'static str,
) -> Result<(&'a serde_json::Value, Option<Deviation>), ParseError> {
    if let Some(other) = o.keys().find(|k| !matches!(k.as_str(), "rating" | "rd")) {
        return Err(ParseError::new(
            field,
            format!("{key} takes rating and rd, not {other:?}"),
        ));
    }
    let rating = o
        .get("rating")
        .ok_or_else(|| ParseError::new(field, format!("{key} needs a rating")))?;
    let deviation = o
        .get("rd")
        .map(|rd| {
            rd.as_f64()
                .filter(|d| (0.0..=f64::from(MAX_DEVIATION)).contains(d))
                .map(|d| d.round() as Deviation)
                .ok_or_else(|| {
                    ParseError::new(
                        field,
                        format!("{key}.rd must be a number between 0 and {MAX_DEVIATION}"),
                    )
                })
        })
        .transpose()?;
    Ok((rating, deviation))
}
