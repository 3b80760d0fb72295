//! The queue summary of SPEC §3.3: per tenant and pool, how many wait, how
//! long players wait, how many matches and time-outs the last minutes saw,
//! and how close the matches were. Every figure comes from the store's
//! bounded per-pool statistics (shared by all nodes on Redis), never from
//! scanning entries. The figures per side of a matcher experiment come from
//! the durable audit log of decisions (every node's), newest first.

use futures::StreamExt;
use serde::Serialize;

use crate::domain::{Arm, Experiment, Millis, PoolRef, TenantId, UserId};
use crate::store::{AuditQuery, AuditStore, PoolStatsStore, StoreResult};

/// How far back the outcome counts look.
pub const WINDOW_MS: Millis = 5 * 60_000;

/// How many pools are read at once.
const CONCURRENT_READS: usize = 16;

/// One pool's line of the summary.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PoolSummary {
    pub tenant_id: String,
    /// `<variant>_<time control>_<mode>_<region>`.
    pub pool_key: String,
    pub variant: String,
    pub time_control: String,
    pub mode: String,
    pub region: String,
    /// Entries searching now.
    pub waiting_count: u64,
    /// How long the longest-waiting searching player has waited.
    pub oldest_wait_seconds: Option<f64>,
    /// Mean wait of the pool's latest matched players (up to 64); null
    /// before the first match.
    pub avg_wait_seconds: Option<f64>,
    /// Median of the same waits.
    pub p50_wait_seconds: Option<f64>,
    /// 95th percentile of the same waits.
    pub p95_wait_seconds: Option<f64>,
    /// Matches committed in the last 5 minutes.
    pub matches_last_5m: u64,
    /// Entries timed out in the last 5 minutes.
    pub timeouts_last_5m: u64,
    /// Matches per minute over the last 5 minutes.
    pub matches_per_minute: f64,
    /// Median rating gap of the pool's latest matches (up to 128); null
    /// before the first match.
    pub median_rating_gap: Option<i32>,
}

/// The `q` quantile (0..=1) of `samples` by nearest rank; reorders them.
pub fn quantile<T: Copy + Ord>(samples: &mut [T], q: f64) -> Option<T> {
    if samples.is_empty() {
        return None;
    }
    let rank = ((q * samples.len() as f64) as usize).min(samples.len() - 1);
    Some(*samples.select_nth_unstable(rank).1)
}

fn seconds(ms: Millis) -> f64 {
    ms.max(0) as f64 / 1000.0
}

/// The summary of every known pool (of `tenant` only, when given), sorted
/// by tenant and pool key.
pub async fn summary(
    store: &dyn PoolStatsStore,
    tenant: Option<&TenantId>,
    now: Millis,
) -> StoreResult<Vec<PoolSummary>> {
    let pools: Vec<PoolRef> = store
        .known_pools()
        .await?
        .into_iter()
        .filter(|p| tenant.is_none_or(|t| &p.tenant_id == t))
        .collect();
    let since = now - WINDOW_MS;
    let mut lines: Vec<PoolSummary> = futures::stream::iter(pools)
        .map(|pool| async move {
            let stats = store.pool_stats(&pool, since).await?;
            Ok::<_, crate::store::StoreError>((pool, stats))
        })
        .buffer_unordered(CONCURRENT_READS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<StoreResult<Vec<_>>>()?
        .into_iter()
        .filter(|(_, s)| {
            s.waiting > 0 || s.matches > 0 || s.timeouts > 0 || !s.recent_waits.is_empty()
        })
        .map(|(pool, mut s)| {
            let waits = &mut s.recent_waits;
            let avg = (!waits.is_empty())
                .then(|| seconds(waits.iter().sum::<Millis>() / waits.len() as Millis));
            let p50 = quantile(waits, 0.5).map(seconds);
            let p95 = quantile(waits, 0.95).map(seconds);
            PoolSummary {
                tenant_id: pool.tenant_id.to_string(),
                pool_key: pool.key.to_string(),
                variant: pool.key.variant.to_string(),
                time_control: pool.key.time_control.to_string(),
                mode: pool.key.mode.to_string(),
                region: pool.key.region.to_string(),
                waiting_count: s.waiting,
                oldest_wait_seconds: s.oldest_enqueued_at.map(|at| seconds(now - at)),
                avg_wait_seconds: avg,
                p50_wait_seconds: p50,
                p95_wait_seconds: p95,
                matches_last_5m: s.matches,
                timeouts_last_5m: s.timeouts,
                matches_per_minute: s.matches as f64 / (WINDOW_MS as f64 / 60_000.0),
                median_rating_gap: quantile(&mut s.recent_gaps, 0.5),
            }
        })
        .collect();
    lines.sort_by(|a, b| (&a.tenant_id, &a.pool_key).cmp(&(&b.tenant_id, &b.pool_key)));
    Ok(lines)
}

/// Audit events of each kind (matches, time-outs) one tenant's experiment
/// figures read at most: a bound on the summary's cost in a busy tenant
/// (past it, the figures cover the newest events only).
pub const ARM_EVENTS_READ: usize = 20_000;

/// Audit events read per page.
const AUDIT_PAGE: u32 = 1_000;

/// One side of a tenant's matcher experiment over the last 5 minutes.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ArmSummary {
    pub tenant_id: String,
    pub experiment: String,
    /// `control` or `treatment`.
    pub arm: String,
    /// The strategy this side pairs by (`volume` or `window`).
    pub strategy: String,
    /// Matches of this side's players in the last 5 minutes.
    pub matches_last_5m: u64,
    /// This side's entries timed out (maximum queue time) in the last 5
    /// minutes.
    pub timeouts_last_5m: u64,
    /// Median wait of this side's players matched in the last 5 minutes.
    pub p50_wait_seconds: Option<f64>,
    /// 95th percentile of the same waits.
    pub p95_wait_seconds: Option<f64>,
    /// Median rating gap of the same matches.
    pub median_rating_gap: Option<i32>,
}

/// The newest events of `kind` of `tenant` since `since`, at most
/// [`ARM_EVENTS_READ`].
async fn recent_events(
    audit: &dyn AuditStore,
    tenant: &TenantId,
    kind: &str,
    since: Millis,
) -> StoreResult<Vec<serde_json::Value>> {
    let mut found = Vec::new();
    let mut before = None;
    while found.len() < ARM_EVENTS_READ {
        let page = audit
            .audit_events(&AuditQuery {
                tenant_id: tenant.clone(),
                kind: Some(kind.to_owned()),
                subject: None,
                before,
                limit: AUDIT_PAGE,
            })
            .await?;
        let full = page.len() == AUDIT_PAGE as usize;
        for (id, event) in page {
            if event.at < since {
                return Ok(found);
            }
            before = Some(id);
            found.push(event.detail);
        }
        if !full {
            break;
        }
    }
    Ok(found)
}

/// Both sides of `tenant`'s experiment over the last 5 minutes: matches,
/// waits and gaps from its `match` decisions, time-outs from its `timeout`
/// ones, each counted on the side of its player (both players of a match
/// are on one side: a side is paired among itself).
pub async fn arms(
    audit: &dyn AuditStore,
    tenant: &TenantId,
    experiment: &Experiment,
    now: Millis,
) -> StoreResult<Vec<ArmSummary>> {
    let since = now - WINDOW_MS;
    let side = |user: &serde_json::Value| {
        let user = UserId::parse(user.as_str()?).ok()?;
        Some(experiment.arm(tenant, &user))
    };
    #[derive(Default)]
    struct Figures {
        matches: u64,
        timeouts: u64,
        waits: Vec<Millis>,
        gaps: Vec<i32>,
    }
    let mut figures: Vec<(Arm, Figures)> = Arm::ALL
        .iter()
        .map(|&arm| (arm, Figures::default()))
        .collect();
    for m in recent_events(audit, tenant, "match", since).await? {
        let Some(arm) = side(&m["white"]["user"]) else {
            continue;
        };
        let Some((_, f)) = figures.iter_mut().find(|f| f.0 == arm) else {
            continue;
        };
        f.matches += 1;
        for player in ["white", "black"] {
            if let Some(waited) = m[player]["waited_ms"].as_i64() {
                f.waits.push(waited);
            }
        }
        if let Some(gap) = m["gap"].as_i64() {
            f.gaps.push(gap as i32);
        }
    }
    for t in recent_events(audit, tenant, "timeout", since).await? {
        if t["reason"] != "max_queue_time" {
            continue;
        }
        let Some(arm) = side(&t["user"]) else {
            continue;
        };
        if let Some((_, f)) = figures.iter_mut().find(|f| f.0 == arm) {
            f.timeouts += 1;
        }
    }
    Ok(figures
        .into_iter()
        .map(|(arm, mut f)| ArmSummary {
            tenant_id: tenant.to_string(),
            experiment: experiment.name.clone(),
            arm: arm.as_str().to_owned(),
            strategy: experiment.strategy(arm).as_str().to_owned(),
            matches_last_5m: f.matches,
            timeouts_last_5m: f.timeouts,
            p50_wait_seconds: quantile(&mut f.waits, 0.5).map(seconds),
            p95_wait_seconds: quantile(&mut f.waits, 0.95).map(seconds),
            median_rating_gap: quantile(&mut f.gaps, 0.5),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_by_nearest_rank() {
        assert_eq!(quantile::<i64>(&mut [], 0.5), None);
        assert_eq!(quantile(&mut [7], 0.95), Some(7));
        assert_eq!(quantile(&mut [4, 1, 3, 2], 0.5), Some(3));
        let mut hundred: Vec<i64> = (1..=100).rev().collect();
        assert_eq!(quantile(&mut hundred, 0.95), Some(96));
        assert_eq!(quantile(&mut hundred, 1.0), Some(100));
    }
}
