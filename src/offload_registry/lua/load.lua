-- Read a session's snapshot and the deltas appended after it, in one round trip.
-- KEYS[1] state hash, KEYS[2] deltas list
-- ARGV[1] epoch the caller believes current, ARGV[2] idle TTL (ms),
-- ARGV[3] refresh the TTL only when less than this much (ms) of it remains
-- Returns nil on a miss (absent, other epoch) or {snap, claims watermark, {delta, ...}}.
local fields = redis.call('HMGET', KEYS[1], 'epoch', 'snap', 'cwmb')
if fields[1] ~= ARGV[1] or not fields[2] then
  return false
end
local deltas = redis.call('LRANGE', KEYS[2], 0, -1)
local ttl = tonumber(ARGV[2])
local remaining = redis.call('PTTL', KEYS[1])
-- Refresh the idle TTL at most once per interval, so reads seldom turn into writes.
if remaining >= 0 and remaining < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {fields[2], fields[3] or '', deltas}
