//! Configuration changed at run time (SPEC §3.3), kept in the durable
//! store, cached on every node: matching policies per tenant and per pool,
//! each tenant's configuration (time controls, variants, regions, default
//! region) and its feature flags (challenges, the matcher experiment).
//!
//! A pool's policy is the settings' defaults, with the fields its tenant's
//! policy sets, then the fields the pool's own sets; a tenant's
//! configuration and flags are the settings' with the fields it sets. Every
//! read on the hot path (a join, a pass, an event stream, a challenge) is
//! served from this node's copy; the copy is reloaded when the store's
//! version moves:
//! at once on the node that made the change, on the others when the change
//! is announced (Redis pub/sub) and, should an announcement be lost, by a
//! version check every second — so a change reaches every node and worker
//! within 2 s, with no restart.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::ServiceError;
use crate::domain::{
    Clock, Flags, FlagsPatch, PolicyPatch, PoolKey, PoolPolicy, PoolRef, SystemClock, TenantConfig,
    TenantConfigPatch, TenantId, UserId,
};
use crate::shutdown::Stop;
use crate::store::{AuditEvent, ConfigRows, ConfigScope, DurableStore, StoreError};

/// How often a node checks the store's configuration version.
pub const VERSION_CHECK: Duration = Duration::from_secs(1);

/// Tells the other processes the configuration changed (Redis pub/sub).
#[async_trait::async_trait]
pub trait ConfigAnnouncer: Send + Sync + 'static {
    async fn announce_config(&self);
}

/// What applies where nothing is set: from the settings.
#[derive(Debug, Clone)]
pub struct LiveDefaults {
    pub policy: PoolPolicy,
    pub tenant: TenantConfig,
    pub flags: Flags,
}

impl LiveDefaults {
    /// `policy` under the built-in tenant configuration, challenges on, no
    /// experiment (tools and tests).
    pub fn of_policy(policy: PoolPolicy) -> Self {
        Self {
            policy,
            tenant: TenantConfig::default(),
            flags: Flags {
                challenges: true,
                matcher_experiment: None,
            },
        }
    }
}

/// This node's copy of what is set, with each tenant's configuration and
/// flags resolved (the hot path reads them per request).
#[derive(Default)]
struct Table {
    version: i64,
    tenants: HashMap<TenantId, PolicyPatch>,
    pools: HashMap<(TenantId, PoolKey), PolicyPatch>,
    configs: HashMap<TenantId, (TenantConfigPatch, Arc<TenantConfig>)>,
    flags: HashMap<TenantId, (FlagsPatch, Arc<Flags>)>,
    /// Players restricted for fair play, per tenant.
    restricted: HashMap<TenantId, Arc<HashSet<UserId>>>,
}

fn parse<T: DeserializeOwned>(body: Value, what: &str) -> Result<T, StoreError> {
    serde_json::from_value(body)
        .map_err(|e| StoreError::Corrupt(format!("a stored {what} does not read: {e}")))
}

impl Table {
    fn of(read: ConfigRows, defaults: &LiveDefaults) -> Result<Self, StoreError> {
        let mut table = Table {
            version: read.version,
            ..Table::default()
        };
        let mut restricted: HashMap<TenantId, HashSet<UserId>> = HashMap::new();
        for row in read.rows {
            let tenant = row.tenant_id;
            match row.scope {
                ConfigScope::Policy(Some(pool)) => {
                    table
                        .pools
                        .insert((tenant, pool), parse(row.body, "pool policy")?);
                }
                ConfigScope::Policy(None) => {
                    table
                        .tenants
                        .insert(tenant, parse(row.body, "tenant policy")?);
                }
                ConfigScope::Tenant => {
                    let patch: TenantConfigPatch = parse(row.body, "tenant configuration")?;
                    let config = Arc::new(defaults.tenant.with(&patch));
                    table.configs.insert(tenant, (patch, config));
                }
                ConfigScope::Flags => {
                    let patch: FlagsPatch = parse(row.body, "set of flags")?;
                    let flags = Arc::new(patch.over(&defaults.flags));
                    table.flags.insert(tenant, (patch, flags));
                }
                ConfigScope::Restricted(user) => {
                    restricted.entry(tenant).or_default().insert(user);
                }
            }
        }
        table.restricted = restricted
            .into_iter()
            .map(|(tenant, users)| (tenant, Arc::new(users)))
            .collect();
        Ok(table)
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

pub struct LiveConfig {
    defaults: LiveDefaults,
    default_tenant: Arc<TenantConfig>,
    default_flags: Arc<Flags>,
    /// A std lock: held to swap or clone an `Arc`, never across an await.
    table: RwLock<Arc<Table>>,
    durable: Arc<dyn DurableStore>,
    announcer: Option<Arc<dyn ConfigAnnouncer>>,
    /// Poked when another process announces a change.
    announced: Option<Arc<Notify>>,
    clock: Arc<dyn Clock>,
}

impl LiveConfig {
    /// The settings' `defaults`, nothing set yet: call [`Self::load`]
    /// before serving.
    pub fn new(defaults: LiveDefaults, durable: Arc<dyn DurableStore>) -> Self {
        Self {
            default_tenant: Arc::new(defaults.tenant.clone()),
            default_flags: Arc::new(defaults.flags.clone()),
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
        self.defaults.policy
    }

    /// The policy `pool` matches by now (no I/O).
    pub fn policy(&self, pool: &PoolRef) -> PoolPolicy {
        self.table()
            .resolve(self.defaults.policy, &pool.tenant_id, Some(pool.key))
    }

    /// The policy of `tenant`'s pools that set none of their own.
    pub fn tenant_policy(&self, tenant: &TenantId) -> PoolPolicy {
        self.table().resolve(self.defaults.policy, tenant, None)
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
            defaults: self.defaults.policy,
            tenant: table.tenants.get(tenant).copied(),
            pools,
        }
    }

    /// What is set for `pool` of `tenant` itself.
    pub fn of_pool(&self, tenant: &TenantId, pool: PoolKey) -> Option<PolicyPatch> {
        self.table().pools.get(&(tenant.clone(), pool)).copied()
    }

    /// What `tenant` offers its players now (no I/O).
    pub fn tenant_config(&self, tenant: &TenantId) -> Arc<TenantConfig> {
        self.table()
            .configs
            .get(tenant)
            .map_or_else(|| self.default_tenant.clone(), |(_, c)| c.clone())
    }

    /// The configuration the settings give a tenant that sets none.
    pub fn default_tenant_config(&self) -> &TenantConfig {
        &self.default_tenant
    }

    /// What `tenant`'s configuration sets itself.
    pub fn tenant_config_set(&self, tenant: &TenantId) -> Option<TenantConfigPatch> {
        self.table().configs.get(tenant).map(|(p, _)| p.clone())
    }

    /// `tenant`'s flags in force (no I/O).
    pub fn flags(&self, tenant: &TenantId) -> Arc<Flags> {
        self.table()
            .flags
            .get(tenant)
            .map_or_else(|| self.default_flags.clone(), |(_, f)| f.clone())
    }

    /// What `tenant`'s flags set themselves.
    pub fn flags_set(&self, tenant: &TenantId) -> Option<FlagsPatch> {
        self.table().flags.get(tenant).map(|(p, _)| p.clone())
    }

    /// `tenant`'s players restricted for fair play (no I/O).
    pub fn restricted(&self, tenant: &TenantId) -> Arc<HashSet<UserId>> {
        self.table()
            .restricted
            .get(tenant)
            .cloned()
            .unwrap_or_default()
    }

    /// Reads everything set from the store.
    pub async fn load(&self) -> Result<(), ServiceError> {
        let read = self.durable.config().await?;
        let fresh = Arc::new(Table::of(read, &self.defaults)?);
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        // Two loads racing: the newer version stays.
        if fresh.version >= table.version {
            *table = fresh;
        }
        Ok(())
    }

    /// Reloads if the store's version moved.
    async fn refresh(&self) -> Result<(), ServiceError> {
        if self.durable.config_version().await? != self.table().version {
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
                tracing::warn!(error = %e, "reading the run-time configuration failed; the copy in hand stays");
            }
        }
    }

    /// Writes one change with its audit event, reloads this node's copy and
    /// tells the others. Answers what was set there before.
    async fn write<T: Serialize>(
        &self,
        (actor, tenant): (&str, &TenantId),
        (scope, kind, subject): (ConfigScope, &str, String),
        set: Option<&T>,
        detail: Value,
    ) -> Result<Option<Value>, ServiceError> {
        let body = set.map(|s| serde_json::to_value(s).unwrap_or_default());
        let mut detail = detail;
        detail["actor"] = json!(actor);
        detail["after"] = body.clone().unwrap_or_default();
        let audit = AuditEvent {
            at: self.clock.now(),
            tenant_id: tenant.clone(),
            kind: kind.into(),
            subject,
            detail,
        };
        let before = self
            .durable
            .change_config(tenant, scope, body, audit)
            .await?;
        self.load().await?;
        if let Some(announcer) = &self.announcer {
            announcer.announce_config().await;
        }
        tracing::info!(event = kind, tenant_id = %tenant, actor, "run-time configuration changed");
        Ok(before)
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
        let subject = match pool {
            Some(pool) => format!("policy:{tenant}/{pool}"),
            None => format!("policy:{tenant}"),
        };
        let before = self
            .write(
                (actor, tenant),
                (ConfigScope::Policy(pool), "policy_changed", subject),
                patch.as_ref(),
                json!({ "pool": pool.map(|p| p.to_string()) }),
            )
            .await?;
        Ok(before.map(|b| parse(b, "policy")).transpose()?)
    }

    /// Sets (`Some`) or drops (`None`) what `tenant` offers its players:
    /// a 400 names the field a configuration that cannot serve anyone
    /// breaks. Entries already waiting in a pool it no longer offers keep
    /// waiting until matched, cancelled or timed out.
    pub async fn change_tenant_config(
        &self,
        actor: &str,
        tenant: &TenantId,
        patch: Option<TenantConfigPatch>,
    ) -> Result<Option<TenantConfigPatch>, ServiceError> {
        if let Some(patch) = &patch {
            self.defaults
                .tenant
                .with(patch)
                .check()
                .map_err(|(field, why)| ServiceError::InvalidRequest(format!("{field} {why}")))?;
        }
        let before = self
            .write(
                (actor, tenant),
                (
                    ConfigScope::Tenant,
                    "tenant_config_changed",
                    format!("tenant:{tenant}"),
                ),
                patch.as_ref(),
                json!({}),
            )
            .await?;
        Ok(before
            .map(|b| parse(b, "tenant configuration"))
            .transpose()?)
    }

    /// Sets (`Some`) or drops (`None`) `tenant`'s flags.
    pub async fn change_flags(
        &self,
        actor: &str,
        tenant: &TenantId,
        patch: Option<FlagsPatch>,
    ) -> Result<Option<FlagsPatch>, ServiceError> {
        if let Some(patch) = &patch {
            patch
                .check()
                .map_err(|(field, why)| ServiceError::InvalidRequest(format!("{field} {why}")))?;
        }
        let before = self
            .write(
                (actor, tenant),
                (
                    ConfigScope::Flags,
                    "flags_changed",
                    format!("flags:{tenant}"),
                ),
                patch.as_ref(),
                json!({}),
            )
            .await?;
        Ok(before.map(|b| parse(b, "set of flags")).transpose()?)
    }

    /// Restricts (`Some`: the reason, if one is given) or clears (`None`)
    /// `user` of `tenant` for fair play: from the next pass on every node
    /// (within seconds), they are paired only with other restricted
    /// players. Answers whether they were restricted before.
    pub async fn change_restricted(
        &self,
        actor: &str,
        tenant: &TenantId,
        user: &UserId,
        reason: Option<Option<String>>,
    ) -> Result<bool, ServiceError> {
        let body = reason.map(|r| match r {
            Some(reason) => json!({ "reason": reason }),
            None => json!({}),
        });
        let before = self
            .write(
                (actor, tenant),
                (
                    ConfigScope::Restricted(user.clone()),
                    "restricted_changed",
                    format!("restricted:{tenant}/{user}"),
                ),
                body.as_ref(),
                json!({ "user_id": user }),
            )
            .await?;
        Ok(before.is_some())
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
            ..Table::default()
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
            if let Err((field, why)) = after.resolve(self.defaults.policy, tenant, p).check() {
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
