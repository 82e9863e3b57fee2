#!lua
-- The claim filter: Redis's fast answer in front of the on-disk claims record, which alone
-- decides (a won claim is committed there, under the journal's lock, before it is returned).
-- KEYS[1] claims hash: every form of an id that is committed (won by someone, or in the
--         journal) -> 'c'
-- ARGV[1] op, ARGV[2] idle TTL (ms), ARGV[3..]
-- filter: ARGV[3..] groups "<n>", form1..formn (an id's forms) -> 1-based indexes of the
--         groups none of whose forms is committed (only those go on to the journal's lock)
-- commit: ARGV[3..] forms now committed in the claims record or found in the journal
local op = ARGV[1]
if op == 'filter' then
  local open, i, group = {}, 3, 1
  while i <= #ARGV do
    local n = tonumber(ARGV[i])
    local free = true
    for j = i + 1, i + n do
      if redis.call('HEXISTS', KEYS[1], ARGV[j]) == 1 then
        free = false
        break
      end
    end
    if free then
      open[#open + 1] = group
    end
    i, group = i + n + 1, group + 1
  end
  return open
end
if op == 'commit' then
  for i = 3, #ARGV do
    redis.call('HSET', KEYS[1], ARGV[i], 'c')
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return #ARGV - 2
end
return redis.error_reply('ERR unknown claim op ' .. tostring(op))
