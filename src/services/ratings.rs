//! Ratings per speed, read from the rating store (1500 when unknown).
//!
//! In the embedded default this process is the only writer of the local
//! ratings table, so [`RatingService::preloaded`] keeps an authoritative
//! copy in memory: loaded once at start, written through on every change.
//! A join then reads its rating without touching SQLite.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::domain::{ParseError, RATING_RANGE, Rating, Speed, TenantId, UserId};
use crate::store::{RatingStore, Ratings, StoreResult};

type Table = HashMap<(TenantId, UserId), Ratings>;

#[derive(Clone)]
pub struct RatingService {
    store: Arc<dyn RatingStore>,
    /// The in-memory copy, when this process is the table's only writer.
    /// A std lock: held for one map operation, never across an await.
    copy: Option<Arc<RwLock<Table>>>,
}

impl RatingService {
    /// Reads every rating from the store each time.
    pub fn direct(store: Arc<dyn RatingStore>) -> Self {
        Self { store, copy: None }
    }

    /// Loads the whole table into memory; only for a store no other
    /// process writes.
    pub async fn preloaded(store: Arc<dyn RatingStore>) -> StoreResult<Self> {
        let all = store.all_ratings().await?;
        let table: Table = all.into_iter().map(|(t, u, r)| ((t, u), r)).collect();
        Ok(Self {
            store,
            copy: Some(Arc::new(RwLock::new(table))),
        })
    }

    async fn stored(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Ratings> {
        match &self.copy {
            Some(copy) => Ok(copy
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(tenant.clone(), user.clone()))
                .copied()
                .unwrap_or_default()),
            None => self.store.ratings(tenant, user).await,
        }
    }

    /// The player's rating for `speed`.
    pub async fn rating(
        &self,
        tenant: &TenantId,
        user: &UserId,
        speed: Speed,
    ) -> StoreResult<Rating> {
        Ok(self.stored(tenant, user).await?.get(speed))
    }

    /// All four speeds, defaults filled in.
    pub async fn ratings(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Ratings> {
        Ok(self.stored(tenant, user).await?.complete())
    }

    /// Sets the given speeds (store first, then the copy); answers all four.
    pub async fn set(
        &self,
        tenant: &TenantId,
        user: &UserId,
        update: &Ratings,
    ) -> StoreResult<Ratings> {
        let now = self.store.set_ratings(tenant, user, update).await?;
        if let Some(copy) = &self.copy {
            copy.write()
                .unwrap_or_else(|e| e.into_inner())
                .insert((tenant.clone(), user.clone()), now);
        }
        Ok(now.complete())
    }
}

/// Checks an update: at least one speed, each within [`RATING_RANGE`].
pub fn validate_update(update: &Ratings) -> Result<(), ParseError> {
    let all = [update.bullet, update.blitz, update.rapid, update.classical];
    if all.iter().all(Option::is_none) {
        return Err(ParseError::new(
            "ratings",
            "give at least one of bullet, blitz, rapid, classical",
        ));
    }
    for (speed, value) in Speed::ALL.iter().zip(all) {
        if let Some(v) = value
            && !RATING_RANGE.contains(&v)
        {
            return Err(ParseError::new(
                speed.as_str(),
                format!(
                    "must be between {} and {}",
                    RATING_RANGE.start(),
                    RATING_RANGE.end()
                ),
            ));
        }
    }
    Ok(())
}
