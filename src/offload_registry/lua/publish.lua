#!lua
-- Replace a session's snapshot (built from its journal) and drop its deltas, atomically.
-- KEYS[1] state hash, KEYS[2] deltas list, KEYS[3] lease fence (highest lease token)
-- ARGV[1] epoch, ARGV[2] snapshot, ARGV[3] journal watermark id, ARGV[4] claims watermark id,
-- ARGV[5] packed claims watermark, ARGV[6] idle TTL (ms),
-- ARGV[7] mode: 'always', 'if-absent' (only when there is no current-epoch snapshot),
--         or a version number (compare and set: only when the stored version equals it),
-- ARGV[8] invalidation channel ('' for none), ARGV[9] message prefix ("<tag> <origin>"),
-- ARGV[10] the writer's lease token ('' for a write made without a lease),
-- ARGV[11] 'sharded' to SPUBLISH (Redis Cluster: the session's own shard channel, in its
--          slot), anything else or absent to PUBLISH
-- Returns the new version, 0 when the mode refused the write or the snapshot is behind the
-- one held, -1 when the token is stale.
-- In every mode a snapshot never replaces one of the same epoch that stands at a later
-- journal or claims position (_order.lua: the positions' own fields, JOURNAL_POSITION_FIELD
-- and CLAIMS_POSITION_FIELD, which deltas keep current): a writer whose publish lands after
-- a later writer's is refused like a compare-and-set. No position held, one of an older
-- format or of another epoch, or another file of the same generation: replaced as asked.
-- #include _tokens.lua
-- #include _order.lua
-- #state-fields  (one local per state hash field, e.g. EPOCH_FIELD: store/keyspace.py)
if (ARGV[10] or '') ~= '' and above(canon(redis.call('GET', KEYS[3])), canon(ARGV[10])) then
  return -1
end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then
  redis.call('DEL', KEYS[1])  -- a planted or foreign value: ours to replace
end
local mode = ARGV[7]
if mode == 'if-absent' then
  if redis.call('HGET', KEYS[1], EPOCH_FIELD) == ARGV[1] then
    return 0
  end
elseif mode ~= 'always' then
  if redis.call('HGET', KEYS[1], VERSION_FIELD) ~= mode then
    return 0
  end
end
local held = redis.call('HMGET', KEYS[1], EPOCH_FIELD, JOURNAL_POSITION_FIELD,
  CLAIMS_POSITION_FIELD)
if held[1] == ARGV[1] then
  local journal, claims = order(ARGV[3], held[2]), order(ARGV[4], held[3])
  if (journal == 'behind' or claims == 'behind') and journal ~= 'ahead' and claims ~= 'ahead' then
    return 0
  end
end
-- HSET before DEL: under the eval compatibility mode (no shebang: fakeredis, Redis 6) Redis
-- checks maxmemory only at a script's first write, and lets a DEL through over the limit.
redis.call('HSET', KEYS[1], EPOCH_FIELD, ARGV[1], SNAPSHOT_FIELD, ARGV[2],
  JOURNAL_POSITION_FIELD, ARGV[3], CLAIMS_POSITION_FIELD, ARGV[4],
  CLAIMS_WATERMARK_FIELD, ARGV[5], DELTA_COUNT_FIELD, 0)
redis.call('DEL', KEYS[2])
local version = redis.call('HINCRBY', KEYS[1], VERSION_FIELD, 1)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if ARGV[8] ~= '' then
  redis.call(ARGV[11] == 'sharded' and 'SPUBLISH' or 'PUBLISH', ARGV[8], ARGV[9] .. ' ' .. version)
end
return version
