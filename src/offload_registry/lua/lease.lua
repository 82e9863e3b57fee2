#!lua
-- A session lease: one holder at a time, with a fencing token that only grows.
-- KEYS[1] lease (string "<token> <holder>", expiring with the lease),
-- KEYS[2] fence (the highest token granted; raised to the journal's record on each grant,
--         since a counter in Redis alone goes backwards when Redis loses data)
-- ARGV[1] op, ARGV[2] holder, ARGV[3] lease TTL (ms), ARGV[4] token (acquire: the floor,
--         i.e. the journal's highest token), ARGV[5] fence TTL (ms)
-- acquire -> {token, 0} granted (a decimal string), or {0, remaining ms} while another has it
-- renew   -> 1 renewed, 0 the lease key is gone (Redis lost it), -1 another holder has it
-- restore -> 1 re-established after Redis lost it, -1 another holder has it
-- release -> 1 released, 0 not ours
-- #include _tokens.lua
local op, holder, ttl, token = ARGV[1], ARGV[2], ARGV[3], canon(ARGV[4])
local current = redis.call('GET', KEYS[1])
local fence = canon(redis.call('GET', KEYS[2]))
if op == 'acquire' then
  if current then
    return {0, redis.call('PTTL', KEYS[1])}
  end
  local granted = plus_one(above(fence, token) and fence or token)
  redis.call('SET', KEYS[2], granted, 'PX', ARGV[5])
  redis.call('SET', KEYS[1], granted .. ' ' .. holder, 'PX', ttl)
  return {granted, 0}
end
local mine = token .. ' ' .. holder
if op == 'renew' then
  if current == mine then
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
    return 1
  end
  if not current then
    return 0
  end
  return -1
end
if op == 'restore' then
  -- The caller just renewed its token in the journal's record, the authority on tokens; a
  -- higher fence here can only come from a grant that was never committed there.
  if current == mine then
    return 1
  end
  if current then
    return -1
  end
  redis.call('SET', KEYS[2], above(fence, token) and fence or token, 'PX', ARGV[5])
  redis.call('SET', KEYS[1], mine, 'PX', ttl)
  return 1
end
if op == 'release' then
  if current == mine then
    redis.call('DEL', KEYS[1])
    return 1
  end
  return 0
end
return redis.error_reply('ERR unknown lease op ' .. tostring(op))
