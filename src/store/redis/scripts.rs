//! The Lua scripts of the Redis queue store. Each touches keys of one hash
//! slot only (a pool's `{tenant|pool}` or a user's `{tenant|user}`), so it
//! runs atomically on a single Redis and on Redis Cluster alike; the
//! exceptions, [`JOIN`], [`STATUS`] and [`COMMIT_MATCHES`] (the steps of a
//! join, a status read and a commit in one call each), are only sent to a
//! single Redis. Entries are hashes of strings, so no script ever turns a
//! timestamp into a float.
//!
//! Guards are stored as `<until ms>|<json>`: scripts compare the deadline
//! with the caller's clock, as the in-memory store does.

use std::sync::LazyLock;

use redis::Script;

/// The claim of [`CLAIM_USER`] and [`JOIN`]: fails while the guards are
/// not known intact (the marker is missing: this Redis lost its data, or
/// was never set up), if the user has an active-game guard in force or a
/// waiting entry; else points the user at the new entry. KEYS 1-4: cur,
/// game, entry index, guards marker (in the user's slot). ARGV 1-4:
/// "<pool> <id>", now, index ttl ms, pool key.
const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[4]) == 0 then return {'lost'} end
local g = redis.call('GET', KEYS[2])
if g then
  local sep = string.find(g, '|', 1, true)
  if tonumber(string.sub(g, 1, sep - 1)) > tonumber(ARGV[2]) then
    return {'active', string.sub(g, sep + 1)}
  end
end
local cur = redis.call('GET', KEYS[1])
if cur then return {'cur', cur} end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[3])
";

/// Lua that adds a searching entry: its hash (field/value pairs from
/// ARGV[`first_field`] on) and its place in the waiting set (ARGV[`id`],
/// scored by ARGV[`id` + 1]).
fn add_entry(entry_key: usize, waiting_key: usize, id: usize, first_field: usize) -> String {
    format!(
        r"
redis.call('HSET', KEYS[{entry_key}], unpack(ARGV, {first_field}))
redis.call('ZADD', KEYS[{waiting_key}], ARGV[{score}], ARGV[{id}])
",
        score = id + 1
    )
}

/// Claims a user for a new entry (Redis Cluster: the entry goes to its
/// pool's slot with [`ADD_ENTRY`] next). KEYS and ARGV as [`CLAIM`].
pub static CLAIM_USER: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{CLAIM}\nreturn {{'ok'}}")));

/// A whole join on a single Redis, where the user's keys and the pool's
/// share one server: the claim of [`CLAIM`], then the entry, atomically.
/// KEYS: cur, game, entry index, guards marker, entry, waiting. ARGV: as
/// [`CLAIM`], then id, enqueued_at, field/value pairs.
pub static JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{CLAIM}{}\nreturn {{'ok'}}",
        add_entry(5, 6, 5, 7)
    ))
});

/// Puts an entry matched for a game back to searching, with its original
/// enqueued_at (the game was aborted). KEYS: entry, waiting, done. ARGV:
/// id, game id, now. Answers the entry's field list, or false when it is
/// not matched for that game.
pub static REQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local e = redis.call('HMGET', KEYS[1], 'status', 'game_id', 'enqueued_at')
if e[1] ~= 'MATCHED' or e[2] ~= ARGV[2] then return false end
redis.call('HSET', KEYS[1], 'status', 'SEARCHING', 'updated_at', ARGV[3], 'last_seen_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'game_id', 'opponent', 'match_id', 'reserved_until', 'reason')
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[2], e[3], ARGV[1])
return redis.call('HGETALL', KEYS[1])
",
    )
});

/// Drops the user's current-entry pointer if it still names this entry.
/// KEYS: cur. ARGV: "<pool> <id>".
pub static UNCLAIM_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
",
    )
});

/// Adds a new searching entry to its pool. KEYS: entry, waiting.
/// ARGV: id, enqueued_at, then field/value pairs.
pub static ADD_ENTRY: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{}\nreturn 1", add_entry(1, 2, 1, 3))));

/// Lua function that reads an entry for its owner; a waiting one is
/// touched (heartbeat). Answers the entry's field list, or false.
const READ_ENTRY_FN: &str = r"
local function read_entry(key, tenant, user, now)
  local e = redis.call('HMGET', key, 'tenant_id', 'user_id', 'status', 'last_seen_at')
  if not e[1] or e[1] ~= tenant or e[2] ~= user then return false end
  if (e[3] == 'SEARCHING' or e[3] == 'RESERVED') and tonumber(now) > tonumber(e[4]) then
    redis.call('HSET', key, 'last_seen_at', now)
  end
  return redis.call('HGETALL', key)
end
";

/// [`READ_ENTRY_FN`] on one entry. KEYS: entry. ARGV: tenant, user, now.
pub static READ_ENTRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{READ_ENTRY_FN}\nreturn read_entry(KEYS[1], ARGV[1], ARGV[2], ARGV[3])"
    ))
});

/// A status read on a single Redis, in one call: the entry's pool from the
/// user's index key, then [`READ_ENTRY_FN`] on the entry key that pool
/// gives. That key is derived, not passed, which only a single Redis
/// allows (on a Cluster it may live on another node). KEYS: entry index.
/// ARGV: tenant, user, now, entry key up to the pool (`<prefix>:{<tenant>|`),
/// entry key after it (`}:e:<id>`).
pub static STATUS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{READ_ENTRY_FN}{}",
        r"
local pool = redis.call('GET', KEYS[1])
if not pool then return false end
return read_entry(ARGV[4] .. pool .. ARGV[5], ARGV[1], ARGV[2], ARGV[3])
"
    ))
});

/// Cancels the owner's searching entry, and announces it on the entry
/// channel. KEYS: entry, waiting, done. ARGV: tenant, user, now, id,
/// channel. Answers 'cancelled' + entry, 'cannot' or 'none'.
pub static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local e = redis.call('HMGET', KEYS[1], 'tenant_id', 'user_id', 'status')
if not e[1] or e[1] ~= ARGV[1] or e[2] ~= ARGV[2] then return {'none'} end
if e[3] == 'RESERVED' or e[3] == 'MATCHED' then return {'cannot'} end
if e[3] ~= 'SEARCHING' then return {'none'} end
redis.call('HSET', KEYS[1], 'status', 'CANCELLED', 'reason', 'PLAYER', 'updated_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'reserved_until')
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[3] .. ' ' .. ARGV[4])
return {'cancelled', redis.call('HGETALL', KEYS[1])}
",
    )
});

/// Records that clients of entries of one pool were heard from: each
/// waiting entry's `last_seen_at` moves up to the time given. KEYS: waiting
/// (it only routes the call to the pool's slot). ARGV: entry key prefix,
/// then pairs id, time.
pub static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for i = 2, #ARGV, 2 do
  local key = ARGV[1] .. ARGV[i]
  local e = redis.call('HMGET', key, 'status', 'last_seen_at')
  if (e[1] == 'SEARCHING' or e[1] == 'RESERVED') and tonumber(ARGV[i + 1]) > tonumber(e[2]) then
    redis.call('HSET', key, 'last_seen_at', ARGV[i + 1])
  end
end
return 1
",
    )
});

/// The pool's searching entries, oldest first, as field lists.
/// KEYS: waiting. ARGV: entry key prefix.
pub static WAITING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = redis.call('HMGET', ARGV[1] .. id, 'id', 'user_id', 'username', 'rating', 'enqueued_at', 'last_seen_at', 'request_id', 'rating_range', 'rating_deviation')
end
return out
",
    )
});

/// Reserves pairs whose entries are both searching. KEYS: waiting, reserved.
/// ARGV: entry key prefix, until, now, then triples a, b, match id.
/// Answers one 1/0 per pair.
pub static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out, ids, scored = {}, {}, {}
for i = 4, #ARGV, 3 do
  local a, b, m = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local sa = redis.call('HGET', ARGV[1] .. a, 'status')
  local sb = redis.call('HGET', ARGV[1] .. b, 'status')
  if sa == 'SEARCHING' and sb == 'SEARCHING' then
    local both = {a, b}
    if a == b then both = {a} end
    for _, id in ipairs(both) do
      redis.call('HSET', ARGV[1] .. id, 'status', 'RESERVED', 'match_id', m, 'reserved_until', ARGV[2], 'updated_at', ARGV[3])
      ids[#ids + 1] = id
      scored[#scored + 1] = ARGV[2]
      scored[#scored + 1] = id
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if #ids > 0 then
  redis.call('ZREM', KEYS[1], unpack(ids))
  redis.call('ZADD', KEYS[2], unpack(scored))
end
return out
",
    )
});

/// Adds `n` to field `kind .. bucket` of a pool's outcome-count hash; when
/// the field is new, drops fields of buckets older than `oldest`. The hash
/// lapses `ttl` ms after its last count.
const COUNT_OUTCOME: &str = r"
local function count_outcome(stats, kind, bucket, oldest, ttl, n)
  if redis.call('HINCRBY', stats, kind .. bucket, n) == n then
    for _, f in ipairs(redis.call('HKEYS', stats)) do
      local b = tonumber(string.sub(f, 3))
      if b and b < tonumber(oldest) then redis.call('HDEL', stats, f) end
    end
  end
  redis.call('PEXPIRE', stats, ttl)
end
";

/// Lua that marks the entries reserved for matches of one pool MATCHED and
/// counts the matches, reading its keys from `K` and its arguments from `A`.
/// K: reserved, waits, done, stats, gaps. A: entry key prefix, now,
/// recent-waits kept, bucket, oldest bucket kept, stats ttl ms, recent gaps
/// kept, entry channel, then per match: match id, game id, rating gap,
/// when the match was made (the entries' `updated_at`, as its record
/// says), number of entries, and that many pairs entry id, opponent json. Answers
/// the ids it matched, and announces them on the entry channel. The pool's
/// sets and lists change once per call, not once per entry.
/// (`reserved_until` stays: it means something only while RESERVED.)
const COMMIT_ENTRIES: &str = r"
local ids, scored, waits, gaps = {}, {}, {}, {}
local i = 9
while i <= #A do
  local m, g, gap, made, n = A[i], A[i + 1], A[i + 2], A[i + 3], tonumber(A[i + 4])
  i = i + 5
  local matched = false
  for _ = 1, n do
    local id, opponent = A[i], A[i + 1]
    i = i + 2
    local key = A[1] .. id
    local e = redis.call('HMGET', key, 'status', 'match_id', 'enqueued_at', 'rating')
    if e[1] == 'RESERVED' and e[2] == m then
      redis.call('HSET', key, 'status', 'MATCHED', 'game_id', g, 'opponent', opponent, 'updated_at', made)
      ids[#ids + 1] = id
      scored[#scored + 1] = A[2]
      scored[#scored + 1] = id
      waits[#waits + 1] = string.format('%d:%s', math.max(tonumber(A[2]) - tonumber(e[3]), 0), e[4] or '')
      matched = true
    end
  end
  if matched then gaps[#gaps + 1] = gap end
end
if #ids > 0 then
  redis.call('ZREM', K[1], unpack(ids))
  redis.call('ZADD', K[3], unpack(scored))
  redis.call('LPUSH', K[2], unpack(waits))
  redis.call('LTRIM', K[2], 0, tonumber(A[3]) - 1)
  count_outcome(K[4], 'm:', A[4], A[5], A[6], #gaps)
  redis.call('LPUSH', K[5], unpack(gaps))
  redis.call('LTRIM', K[5], 0, tonumber(A[7]) - 1)
  redis.call('PEXPIRE', K[5], A[6])
  redis.call('PUBLISH', A[8], A[2] .. ' ' .. table.concat(ids, ' '))
end
return ids
";

/// [`COMMIT_ENTRIES`] on its own (Redis Cluster: the guards went first, to
/// the users' slots). KEYS and ARGV as its `K` and `A`.
pub static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{COUNT_OUTCOME}\nlocal K, A = KEYS, ARGV\n{COMMIT_ENTRIES}"
    ))
});

/// Whole matches of one pool on a single Redis, atomically: per match both
/// players' guards (see [`SET_GUARD_FN`]) and the game's player list, then
/// [`COMMIT_ENTRIES`]. ARGV[1]: the number of matches n. KEYS: per match
/// white game, white cur, black game, black cur, players; then K. ARGV from
/// 2: per match white guard value, ttl, cur; black's three; players value,
/// ttl; then A.
pub static COMMIT_MATCHES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{COUNT_OUTCOME}{SET_GUARD_FN}{}{COMMIT_ENTRIES}",
        r"
local n = tonumber(ARGV[1])
for r = 0, n - 1 do
  local k, a = 5 * r, 2 + 8 * r
  set_guard(KEYS[k + 1], KEYS[k + 2], ARGV[a], ARGV[a + 1], ARGV[a + 2])
  set_guard(KEYS[k + 3], KEYS[k + 4], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5])
  redis.call('SET', KEYS[k + 5], ARGV[a + 6], 'PX', ARGV[a + 7])
end
local K, A = {unpack(KEYS, 5 * n + 1)}, {unpack(ARGV, 8 * n + 2)}
"
    ))
});

/// Puts entries reserved for a match back to searching, with their
/// original enqueued_at. KEYS: waiting, reserved. ARGV: entry key prefix,
/// match id, now, then entry ids.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for i = 4, #ARGV do
  local key = ARGV[1] .. ARGV[i]
  local e = redis.call('HMGET', key, 'status', 'match_id', 'enqueued_at')
  if e[1] == 'RESERVED' and e[2] == ARGV[2] then
    redis.call('HSET', key, 'status', 'SEARCHING', 'updated_at', ARGV[3])
    redis.call('HDEL', key, 'match_id', 'reserved_until')
    redis.call('ZREM', KEYS[2], ARGV[i])
    redis.call('ZADD', KEYS[1], e[3], ARGV[i])
  end
end
return 1
",
    )
});

/// Ends entries still searching with a status (`TIMED_OUT`, counted as
/// time-outs, or `CANCELLED`) and a reason, and announces them on the
/// entry channel. KEYS: waiting, done, stats. ARGV: entry key prefix, now,
/// bucket, oldest bucket kept, stats ttl ms, status, reason, channel, then
/// ids. Answers the changed entries' field lists.
pub static END_SEARCHING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{COUNT_OUTCOME}{}",
        r"
local out, ended = {}, {}
for i = 9, #ARGV do
  local key = ARGV[1] .. ARGV[i]
  if redis.call('HGET', key, 'status') == 'SEARCHING' then
    redis.call('HSET', key, 'status', ARGV[6], 'reason', ARGV[7], 'updated_at', ARGV[2])
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('ZADD', KEYS[2], ARGV[2], ARGV[i])
    out[#out + 1] = redis.call('HGETALL', key)
    ended[#ended + 1] = ARGV[i]
  end
end
if #out > 0 then
  if ARGV[6] == 'TIMED_OUT' then
    count_outcome(KEYS[3], 't:', ARGV[3], ARGV[4], ARGV[5], #out)
  end
  redis.call('PUBLISH', ARGV[8], ARGV[2] .. ' ' .. table.concat(ended, ' '))
end
return out
"
    ))
});

/// Lua function that sets a user's active-game guard and, when the user
/// came through the queue, drops the user's pointer to the entry the game
/// was made from (if it still points there): from here a join answers
/// ACTIVE_GAME_EXISTS. Arguments: game key, cur key, value, ttl ms, `cur`
/// value or "" for none.
const SET_GUARD_FN: &str = r"
local function set_guard(game, cur, value, ttl, cur_value)
  redis.call('SET', game, value, 'PX', ttl)
  if cur_value ~= '' and redis.call('GET', cur) == cur_value then redis.call('DEL', cur) end
end
";

/// One user's guard (see [`SET_GUARD_FN`]). KEYS: game, cur. ARGV: value,
/// ttl ms, `cur` value or "".
pub static SET_GUARD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{SET_GUARD_FN}\nset_guard(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])\nreturn 1"
    ))
});

/// Holds a user for a game made outside the queue: only if the guards are
/// known intact (else -1) and the user has no waiting entry and no guard
/// in force. KEYS: cur, game, guards marker. ARGV: value, ttl ms, now.
pub static HOLD_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local g = redis.call('GET', KEYS[2])
if g then
  local sep = string.find(g, '|', 1, true)
  if tonumber(string.sub(g, 1, sep - 1)) > tonumber(ARGV[3]) then return 0 end
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
",
    )
});

/// Lifts a guard if it is for this match or game. KEYS: game. ARGV: the
/// `"match_id":"…"` or `"game_id":"…"` fragment it must contain.
pub static LIFT_GUARD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local g = redis.call('GET', KEYS[1])
if g and string.find(g, ARGV[1], 1, true) then redis.call('DEL', KEYS[1]) return 1 end
return 0
",
    )
});

/// Forgets a pool's entries finished before a time. KEYS: done, waiting,
/// reserved. ARGV: entry key prefix, before. Answers (count, pool empty).
pub static PURGE_POOL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
for _, id in ipairs(ids) do redis.call('DEL', ARGV[1] .. id) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
local empty = redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[1]) == 0
return {#ids, empty and 1 or 0}
",
    )
});

/// Takes or renews a pool's lease for a holder. KEYS: lease. ARGV: holder,
/// ttl ms. Answers 1 if the holder has it now.
pub static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
",
    )
});

/// Gives up a lease if the holder still has it. KEYS: lease. ARGV: holder.
pub static RELEASE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
",
    )
});
