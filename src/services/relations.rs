//! Who may meet whom: a player's blocks, and players restricted for fair
//! play (paired only with each other). Both are kept in the durable store;
//! the matching pass reads the blocks among the players it paired, and
//! every node holds the restricted players with the run-time configuration
//! ([`LiveConfig::restricted`]).

use std::sync::Arc;

use serde_json::json;

use super::ServiceError;
use super::live::LiveConfig;
use crate::domain::{Clock, TenantId, UserId};
use crate::store::{AuditEvent, BlockChange, DurableStore};

pub struct RelationService {
    durable: Arc<dyn DurableStore>,
    live: Arc<LiveConfig>,
    clock: Arc<dyn Clock>,
}

impl RelationService {
    pub fn new(
        durable: Arc<dyn DurableStore>,
        live: Arc<LiveConfig>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            durable,
            live,
            clock,
        }
    }

    /// Adds (`on`) or lifts `user`'s block of `blocked`, as `actor` asks;
    /// answers whether anything changed. From the next pass on, the two
    /// are never paired while the block stands, whoever blocked whom.
    pub async fn set_block(
        &self,
        actor: &str,
        tenant: &TenantId,
        (user, blocked): (&UserId, &UserId),
        on: bool,
    ) -> Result<bool, ServiceError> {
        if user == blocked {
            // Nobody blocks themself: nothing to lift, nothing to set.
            return if on {
                Err(ServiceError::InvalidRequest(
                    "blocked_user_id must be another player than user_id".into(),
                ))
            } else {
                Ok(false)
            };
        }
        let audit = AuditEvent {
            at: self.clock.now(),
            tenant_id: tenant.clone(),
            kind: if on { "block_added" } else { "block_lifted" }.into(),
            subject: format!("blocks:{tenant}/{user}"),
            detail: json!({ "actor": actor, "user_id": user, "blocked_user_id": blocked }),
        };
        match self
            .durable
            .set_block(tenant, (user, blocked), on, audit)
            .await?
        {
            BlockChange::Changed => {
                tracing::info!(
                    event = if on { "block_added" } else { "block_lifted" },
                    tenant_id = %tenant, user_id = %user, blocked_user_id = %blocked, actor,
                    "block changed"
                );
                Ok(true)
            }
            BlockChange::Unchanged => Ok(false),
            BlockChange::Full => Err(ServiceError::InvalidState(
                "the player blocks 1000 players already, the most kept; lift a block first",
            )),
        }
    }

    /// The players `user` blocks, oldest block first.
    pub async fn blocks(
        &self,
        tenant: &TenantId,
        user: &UserId,
    ) -> Result<Vec<UserId>, ServiceError> {
        Ok(self.durable.blocks_of(tenant, user).await?)
    }

    /// Restricts (`Some`: the reason, if given) or clears (`None`) `user`
    /// for fair play; answers whether they were restricted before.
    pub async fn set_restricted(
        &self,
        actor: &str,
        tenant: &TenantId,
        user: &UserId,
        reason: Option<Option<String>>,
    ) -> Result<bool, ServiceError> {
        self.live
            .change_restricted(actor, tenant, user, reason)
            .await
    }

    /// Whether `user` is restricted, as this node holds it (no I/O).
    pub fn is_restricted(&self, tenant: &TenantId, user: &UserId) -> bool {
        self.live.restricted(tenant).contains(user)
    }
}
