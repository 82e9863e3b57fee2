-- The claim filter: Redis's fast answer in front of the on-disk claims record, which alone
-- decides (a won claim is committed there, under the journal's lock, before it is returned).
-- KEYS[1] claims hash: every form of an id -> 'c' (committed, by anyone) or
--         'p <owner> <ms>' (reserved by a worker that is committing it to the journal now)
-- ARGV[1] op, ARGV[2] owner, ARGV[3] now (ms, the caller's clock), ARGV[4] reservations older
--         than this (ms) are abandoned (their worker died), ARGV[5] idle TTL (ms), ARGV[6..]
-- reserve: ARGV[6..] groups "<n>", form1..formn (an id's forms) -> 1-based indexes of the
--          groups reserved for this owner (none of their forms committed or reserved by a
--          live other worker)
-- commit:  ARGV[6..] forms now committed in the journal's claims record (or in the journal)
-- release: ARGV[6..] forms this owner reserved but did not commit
local op, owner, now, stale = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local function busy(value)
  if not value then
    return false
  end
  if value == 'c' then
    return true
  end
  local who, at = string.match(value, '^p (%S+) (%d+)$')
  return who ~= owner and at ~= nil and now - tonumber(at) < stale
end
if op == 'reserve' then
  local won, i, group = {}, 6, 1
  local mark = 'p ' .. owner .. ' ' .. ARGV[3]
  while i <= #ARGV do
    local n = tonumber(ARGV[i])
    local free = true
    for j = i + 1, i + n do
      if busy(redis.call('HGET', KEYS[1], ARGV[j])) then
        free = false
        break
      end
    end
    if free then
      for j = i + 1, i + n do
        redis.call('HSET', KEYS[1], ARGV[j], mark)
      end
      won[#won + 1] = group
    end
    i, group = i + n + 1, group + 1
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return won
end
if op == 'commit' then
  for i = 6, #ARGV do
    redis.call('HSET', KEYS[1], ARGV[i], 'c')
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return #ARGV - 5
end
if op == 'release' then
  local released = 0
  for i = 6, #ARGV do
    local value = redis.call('HGET', KEYS[1], ARGV[i])
    if value and string.sub(value, 1, #owner + 3) == 'p ' .. owner .. ' ' then
      redis.call('HDEL', KEYS[1], ARGV[i])
      released = released + 1
    end
  end
  return released
end
return redis.error_reply('ERR unknown claim op ' .. tostring(op))
