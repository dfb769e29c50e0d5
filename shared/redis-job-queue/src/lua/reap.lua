-- Housekeeping: forget consumers that stopped heart-beating once nothing is
-- pending on them (their jobs were reclaimed), and trim the failed index.
-- KEYS: 1 stream, 2 consumers, 3 failed
-- ARGV: 1 group, 2 stale-before ms, 3 limit, 4 failed-index cutoff ms
local group = ARGV[1]
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local removed = 0
for _, c in ipairs(stale) do
  local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], group, '-', '+', 1, c)
  if (not ok) or #p == 0 then
    pcall(redis.call, 'XGROUP', 'DELCONSUMER', KEYS[1], group, c)
    redis.call('ZREM', KEYS[2], c)
    removed = removed + 1
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[4])
return removed
