//! Ratings per speed, read from the rating store (1500 when unknown).

use std::sync::Arc;

use crate::domain::{ParseError, RATING_RANGE, Rating, Speed, TenantId, UserId};
use crate::store::{RatingStore, Ratings, StoreResult};

#[derive(Clone)]
pub struct RatingService {
    store: Arc<dyn RatingStore>,
}

impl RatingService {
    pub fn new(store: Arc<dyn RatingStore>) -> Self {
        Self { store }
    }

    /// The player's rating for `speed`.
    pub async fn rating(
        &self,
        tenant: &TenantId,
        user: &UserId,
        speed: Speed,
    ) -> StoreResult<Rating> {
        Ok(self.store.ratings(tenant, user).await?.get(speed))
    }

    /// All four speeds, defaults filled in.
    pub async fn ratings(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Ratings> {
        Ok(self.store.ratings(tenant, user).await?.complete())
    }

    /// Sets the given speeds; answers all four.
    pub async fn set(
        &self,
        tenant: &TenantId,
        user: &UserId,
        update: &Ratings,
    ) -> StoreResult<Ratings> {
        Ok(self
            .store
            .set_ratings(tenant, user, update)
            .await?
            .complete())
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
