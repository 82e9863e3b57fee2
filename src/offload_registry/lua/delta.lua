#!lua
-- Append one change to a session, only if it continues exactly where Redis stands.
-- KEYS[1] state hash, KEYS[2] deltas list, KEYS[3] lease fence (highest lease token)
-- ARGV[1] epoch, ARGV[2] chained field (JOURNAL_POSITION_FIELD or CLAIMS_POSITION_FIELD),
-- ARGV[3] the watermark id the change starts from, ARGV[4] the one it ends at,
-- ARGV[5] packed change, ARGV[6] idle TTL (ms),
-- ARGV[7] invalidation channel ('' for none), ARGV[8] message prefix ("<tag> <origin>"),
-- ARGV[9] the writer's lease token ('' for a write made without a lease),
-- ARGV[10] 'sharded' to SPUBLISH (Redis Cluster: the session's own shard channel, in its
--          slot), anything else or absent to PUBLISH
-- Returns {version, deltas} on success, {0, reason} when refused:
-- 'absent' (no snapshot of this epoch), 'gap' (Redis is not where the change starts) or
-- 'fenced' (a newer lease was granted: the writer's token is stale).
-- #include _tokens.lua
-- #state-fields  (one local per state hash field, e.g. EPOCH_FIELD: store/keyspace.py)
if (ARGV[9] or '') ~= '' and above(canon(redis.call('GET', KEYS[3])), canon(ARGV[9])) then
  return {0, 'fenced'}
end
local fields = redis.call('HMGET', KEYS[1], EPOCH_FIELD, ARGV[2], DELTA_COUNT_FIELD)
if fields[1] ~= ARGV[1] then
  return {0, 'absent'}
end
-- A deltas list evicted or expired apart from its snapshot is a gap too.
if fields[2] ~= ARGV[3] or tonumber(fields[3]) ~= redis.call('LLEN', KEYS[2]) then
  return {0, 'gap'}
end
local count = redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[4], DELTA_COUNT_FIELD, count)
local version = redis.call('HINCRBY', KEYS[1], VERSION_FIELD, 1)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
if ARGV[7] ~= '' then
  redis.call(ARGV[10] == 'sharded' and 'SPUBLISH' or 'PUBLISH', ARGV[7], ARGV[8] .. ' ' .. version)
end
return {version, count}
