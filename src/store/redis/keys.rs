//! Every Redis key of the queue store, built here and nowhere else.
//!
//! Keys are grouped by hash tag so that each script touches one slot of a
//! Redis Cluster: a pool's keys share `{<tenant>|<pool>}`, a player's keys
//! `{<tenant>|<user>}`, a game's player list `{<tenant>|g|<game>}`. Every
//! key starts with the store's prefix (tests use one each).
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<pool>:w` | sorted set | searching entry ids, by priority |
//! | `<pool>:r` | sorted set | reserved entry ids, by reservation deadline |
//! | `<pool>:e:<id>` | hash | one entry |
//! | `<pool>:done` | sorted set | finished entry ids, by when (for purge) |
//! | `<pool>:stats`, `:waits`, `:gaps` | hash, lists | the pool's figures |
//! | `<pool>:lease` | string | the worker passing over the pool |
//! | `<user>:cur` | string | `<pool key> <entry id>` of the waiting entry |
//! | `<user>:ent:<id>` | string | which pool an entry of the user is in |
//! | `<user>:game` | hash | the active-game guard |
//! | `<game>:players` | string | the game's two players (to lift their guards) |
//! | `pools` | sorted set | `<tenant>\|<pool>` of pools with entries |
//! | `guards`, `{<slot tag>}:guards` | string | the guards-intact marker (one per slot on a Cluster) |

use super::slots;
use crate::domain::{GameId, PoolRef, QueueEntryId, TenantId, UserId};

/// The key builder of one store.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// A single Redis (not a Cluster): one guards marker for everyone.
    single_node: bool,
}

impl Keys {
    pub fn new(prefix: &str, single_node: bool) -> Self {
        Self {
            prefix: prefix.to_owned(),
            single_node,
        }
    }

    /// `<prefix>:{<tenant>|`: a tenant's tags up to the pool or user (the
    /// scripts that find a user's entry pool build the rest).
    pub fn tenant_open(&self, tenant: &TenantId) -> String {
        format!("{}:{{{tenant}|", self.prefix)
    }

    pub fn pool(&self, pool: &PoolRef) -> PoolKeys {
        PoolKeys(format!(
            "{}{}}}",
            self.tenant_open(&pool.tenant_id),
            pool.key
        ))
    }

    pub fn user(&self, tenant: &TenantId, user: &UserId) -> UserKeys {
        UserKeys(format!("{}{user}}}", self.tenant_open(tenant)))
    }

    /// The list of a game's players.
    pub fn game_players(&self, tenant: &TenantId, game: &GameId) -> String {
        format!("{}:{{{tenant}|g|{game}}}:players", self.prefix)
    }

    /// The pools with entries.
    pub fn pools(&self) -> String {
        format!("{}:pools", self.prefix)
    }

    /// The guards marker a claim of this user checks: on a Cluster, the one
    /// of the user's slot.
    pub fn guards_marker(&self, tenant: &TenantId, user: &UserId) -> String {
        if self.single_node {
            format!("{}:guards", self.prefix)
        } else {
            let slot = slots::slot_of(&format!("{tenant}|{user}"));
            format!("{}:{{{}}}:guards", self.prefix, slots::tag_for_slot(slot))
        }
    }

    /// Every guards marker: one, or one per slot.
    pub fn all_guards_markers(&self) -> Vec<String> {
        if self.single_node {
            vec![format!("{}:guards", self.prefix)]
        } else {
            slots::all_tags()
                .iter()
                .map(|tag| format!("{}:{{{tag}}}:guards", self.prefix))
                .collect()
        }
    }

    /// The channel other processes' workers hear due pools on.
    pub fn due_channel(&self) -> String {
        format!("{}:due", self.prefix)
    }

    /// The pub/sub channel run-time configuration changes are announced on.
    pub fn config_channel(&self) -> String {
        format!("{}:config", self.prefix)
    }

    /// The pub/sub channel entries that reached a final status are
    /// announced on: the change's time (epoch ms), then the ids, space
    /// separated.
    pub fn entry_channel(&self) -> String {
        format!("{}:entries", self.prefix)
    }
}

/// The member of [`Keys::pools`] (and of due announcements) for a pool.
pub fn pool_member(pool: &PoolRef) -> String {
    format!("{}|{}", pool.tenant_id, pool.key)
}

/// The keys of one pool (one hash slot).
#[derive(Debug, Clone)]
pub struct PoolKeys(String);

impl PoolKeys {
    pub fn waiting(&self) -> String {
        format!("{}:w", self.0)
    }

    pub fn reserved(&self) -> String {
        format!("{}:r", self.0)
    }

    /// Entries of other pools (time controls) listed here too:
    /// `<their pool> <id>`, scored by enqueued_at.
    pub fn guests(&self) -> String {
        format!("{}:g", self.0)
    }

    pub fn done(&self) -> String {
        format!("{}:done", self.0)
    }

    pub fn stats(&self) -> String {
        format!("{}:stats", self.0)
    }

    pub fn waits(&self) -> String {
        format!("{}:waits", self.0)
    }

    pub fn gaps(&self) -> String {
        format!("{}:gaps", self.0)
    }

    pub fn lease(&self) -> String {
        format!("{}:lease", self.0)
    }

    pub fn entry(&self, id: &QueueEntryId) -> String {
        format!("{}:e:{id}", self.0)
    }

    /// What entry keys start with (scripts append the id).
    pub fn entry_prefix(&self) -> String {
        format!("{}:e:", self.0)
    }
}

/// The keys of one player (one hash slot).
#[derive(Debug, Clone)]
pub struct UserKeys(String);

impl UserKeys {
    /// `<pool key> <entry id>` of the player's waiting entry.
    pub fn current(&self) -> String {
        format!("{}:cur", self.0)
    }

    /// The player's active-game guard.
    pub fn game(&self) -> String {
        format!("{}:game", self.0)
    }

    /// Which pool an entry of the player is in.
    pub fn entry(&self, id: &QueueEntryId) -> String {
        format!("{}:ent:{id}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pools_keys_and_a_players_keys_each_share_one_hash_tag() {
        let keys = Keys::new("mm", true);
        let pool: PoolRef = PoolRef {
            tenant_id: TenantId::parse("t1").unwrap(),
            key: "standard_5+0_rated_GLOBAL".parse().unwrap(),
        };
        let p = keys.pool(&pool);
        let id = QueueEntryId::generate();
        for key in [
            p.waiting(),
            p.reserved(),
            p.entry(&id),
            p.lease(),
            p.stats(),
        ] {
            assert!(
                key.starts_with("mm:{t1|standard_5+0_rated_GLOBAL}:"),
                "{key}"
            );
        }
        let u = keys.user(&pool.tenant_id, &UserId::parse("alice").unwrap());
        for key in [u.current(), u.game(), u.entry(&id)] {
            assert!(key.starts_with("mm:{t1|alice}:"), "{key}");
        }
    }
}
