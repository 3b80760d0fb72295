//! Matching policies changed at run time (SPEC §3.3): per tenant and per
//! pool, kept in the durable store, cached on every node.
//!
//! A pool's policy is the settings' defaults, with the fields its tenant's
//! policy sets, then the fields the pool's own sets. Every read on the hot
//! path (a pass, a join's estimate, an event stream) is served from this
//! node's copy; the copy is reloaded when the store's version moves:
//! at once on the node that made the change, on the others when the change
//! is announced (Redis pub/sub) and, should an announcement be lost, by a
//! version check every second — so a change reaches every node and worker
//! within 2 s, with no restart.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;

use super::ServiceError;
use crate::domain::{Clock, PolicyPatch, PoolKey, PoolPolicy, PoolRef, SystemClock, TenantId};
use crate::shutdown::Stop;
use crate::store::{AuditEvent, DurableStore, PolicyRow};

/// How often a node checks the store's policy version.
pub const VERSION_CHECK: Duration = Duration::from_secs(1);

/// Tells the other processes the policies changed (Redis pub/sub).
#[async_trait::async_trait]
pub trait ConfigAnnouncer: Send + Sync + 'static {
    async fn announce_config(&self);
}

/// This node's copy of the policies.
#[derive(Default)]
struct Table {
    version: i64,
    tenants: HashMap<TenantId, PolicyPatch>,
    pools: HashMap<(TenantId, PoolKey), PolicyPatch>,
}

impl Table {
    fn of(version: i64, rows: Vec<PolicyRow>) -> Self {
        let mut table = Table {
            version,
            ..Table::default()
        };
        for row in rows {
            match row.pool {
                Some(pool) => {
                    table.pools.insert((row.tenant_id, pool), row.patch);
                }
                None => {
                    table.tenants.insert(row.tenant_id, row.patch);
                }
            }
        }
        table
    }

    fn resolve(
        &self,
        defaults: PoolPolicy,
        tenant: &TenantId,
        pool: Option<PoolKey>,
    ) -> PoolPolicy {
        let mut policy = defaults;
        if let Some(patch) = self.tenants.get(tenant) {
            policy = policy.with(patch);
        }
        if let Some(pool) = pool
            && let Some(patch) = self.pools.get(&(tenant.clone(), pool))
        {
            policy = policy.with(patch);
        }
        policy
    }
}

/// What is set for a tenant, and for each of its pools.
#[derive(Debug, Clone)]
pub struct TenantPolicies {
    pub defaults: PoolPolicy,
    pub tenant: Option<PolicyPatch>,
    pub pools: Vec<(PoolKey, PolicyPatch)>,
}

pub struct Policies {
    defaults: PoolPolicy,
    /// A std lock: held to swap or clone an `Arc`, never across an await.
    table: RwLock<Arc<Table>>,
    durable: Arc<dyn DurableStore>,
    announcer: Option<Arc<dyn ConfigAnnouncer>>,
    /// Poked when another process announces a change.
    announced: Option<Arc<Notify>>,
    clock: Arc<dyn Clock>,
}

impl Policies {
    /// Policies over `defaults` (the settings'), none set yet: call
    /// [`Self::load`] before serving.
    pub fn new(defaults: PoolPolicy, durable: Arc<dyn DurableStore>) -> Self {
        Self {
            defaults,
            table: RwLock::new(Arc::default()),
            durable,
            announcer: None,
            announced: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Announces changes through `announcer`, and reloads when `announced`
    /// is poked (the node's Redis subscription).
    pub fn with_announcements(
        mut self,
        announcer: Arc<dyn ConfigAnnouncer>,
        announced: Arc<Notify>,
    ) -> Self {
        self.announcer = Some(announcer);
        self.announced = Some(announced);
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The settings' policy, under every policy set.
    pub fn defaults(&self) -> PoolPolicy {
        self.defaults
    }

    /// The policy `pool` matches by now (no I/O).
    pub fn policy(&self, pool: &PoolRef) -> PoolPolicy {
        self.table()
            .resolve(self.defaults, &pool.tenant_id, Some(pool.key))
    }

    /// The policy of `tenant`'s pools that set none of their own.
    pub fn tenant_policy(&self, tenant: &TenantId) -> PoolPolicy {
        self.table().resolve(self.defaults, tenant, None)
    }

    /// What is set for `tenant`.
    pub fn of_tenant(&self, tenant: &TenantId) -> TenantPolicies {
        let table = self.table();
        let mut pools: Vec<(PoolKey, PolicyPatch)> = table
            .pools
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, pool), patch)| (*pool, *patch))
            .collect();
        pools.sort_by_key(|(pool, _)| pool.to_string());
        TenantPolicies {
            defaults: self.defaults,
            tenant: table.tenants.get(tenant).copied(),
            pools,
        }
    }

    /// What is set for `pool` of `tenant` itself.
    pub fn of_pool(&self, tenant: &TenantId, pool: PoolKey) -> Option<PolicyPatch> {
        self.table().pools.get(&(tenant.clone(), pool)).copied()
    }

    /// Reads every policy from the store.
    pub async fn load(&self) -> Result<(), ServiceError> {
        let (version, rows) = self.durable.policies().await?;
        let fresh = Arc::new(Table::of(version, rows));
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        // Two loads racing: the newer version stays.
        if fresh.version >= table.version {
            *table = fresh;
        }
        Ok(())
    }

    /// Reloads if the store's version moved.
    async fn refresh(&self) -> Result<(), ServiceError> {
        if self.durable.policies_version().await? != self.table().version {
            self.load().await?;
        }
        Ok(())
    }

    /// Keeps this node's copy fresh until `stop`: on every announcement,
    /// and by a version check every [`VERSION_CHECK`].
    pub async fn keep_fresh(self: Arc<Self>, mut stop: Stop) {
        let mut tick = tokio::time::interval(VERSION_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let announced = self.announced.clone().unwrap_or_default();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = announced.notified() => {}
                () = crate::shutdown::begun(&mut stop) => return,
            }
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "reading the matching policies failed; the copy in hand stays");
            }
        }
    }

    /// Sets (`Some`) or drops (`None`) the policy of `tenant`, or of one of
    /// its pools, as `actor` asks: checked against every policy it would
    /// change (a 400 names the field and the pool), written with its audit
    /// event, in force here at once and on every node within seconds.
    /// Answers the policy there was before.
    pub async fn change(
        &self,
        actor: &str,
        tenant: &TenantId,
        pool: Option<PoolKey>,
        patch: Option<PolicyPatch>,
    ) -> Result<Option<PolicyPatch>, ServiceError> {
        self.check(tenant, pool, patch.as_ref())?;
        let scope = match pool {
            Some(pool) => format!("policy:{tenant}/{pool}"),
            None => format!("policy:{tenant}"),
        };
        let audit = AuditEvent {
            at: self.clock.now(),
            tenant_id: tenant.clone(),
            kind: "policy_changed".into(),
            subject: scope,
            detail: json!({
                "actor": actor,
                "pool": pool.map(|p| p.to_string()),
                "after": patch,
            }),
        };
        let before = self
            .durable
            .change_policy(tenant, pool, patch, audit)
            .await?;
        self.load().await?;
        if let Some(announcer) = &self.announcer {
            announcer.announce_config().await;
        }
        tracing::info!(event = "policy_changed", tenant_id = %tenant, pool = pool.map(|p| p.to_string()).unwrap_or_default(), actor, "matching policy changed");
        Ok(before)
    }

    /// Every policy the change would make must run: the one changed, and
    /// for a tenant's, each of its pools' that builds on it.
    fn check(
        &self,
        tenant: &TenantId,
        pool: Option<PoolKey>,
        patch: Option<&PolicyPatch>,
    ) -> Result<(), ServiceError> {
        let table = self.table();
        let mut tenants = table.tenants.clone();
        let mut pools = table.pools.clone();
        let key = pool.map(|p| (tenant.clone(), p));
        match (&key, patch) {
            (Some(k), Some(p)) => {
                pools.insert(k.clone(), *p);
            }
            (Some(k), None) => {
                pools.remove(k);
            }
            (None, Some(p)) => {
                tenants.insert(tenant.clone(), *p);
            }
            (None, None) => {
                tenants.remove(tenant);
            }
        }
        let after = Table {
            version: table.version,
            tenants,
            pools,
        };
        let mut affected: Vec<Option<PoolKey>> = match pool {
            Some(p) => vec![Some(p)],
            None => after
                .pools
                .keys()
                .filter(|(t, _)| t == tenant)
                .map(|(_, p)| Some(*p))
                .collect(),
        };
        affected.push(None);
        for p in affected {
            if let Err((field, why)) = after.resolve(self.defaults, tenant, p).check() {
                let whose = match p {
                    Some(p) if Some(p) != pool => format!(" (in pool {p}, which sets the rest)"),
                    _ => String::new(),
                };
                return Err(ServiceError::InvalidRequest(format!(
                    "{field} {why}{whose}"
                )));
            }
        }
        Ok(())
    }
}
