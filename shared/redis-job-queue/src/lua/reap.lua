-- Housekeeping: forget consumers that stopped heart-beating once nothing is
-- pending on them (their jobs were reclaimed), and trim the failed and
-- succeeded indexes.
-- The group is scanned too: a consumer it still has but the live set does
-- not (one that left with jobs pending, or older leftovers) is deleted
-- once it holds nothing and has been idle for the stale window.
-- KEYS: 1 stream, 2 consumers, 3 failed, 4 succeeded
-- ARGV: 1 group, 2 stale window ms (silent this long: dead), 3 limit,
--       4 retention ms of the failed and succeeded indexes
-- Times are the server's: no host clock takes part.
local group = ARGV[1]
local limit = tonumber(ARGV[3])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]), 'LIMIT', 0, limit)
local removed = 0
for _, c in ipairs(stale) do
  local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], group, '-', '+', 1, c)
  if (not ok) or #p == 0 then
    pcall(redis.call, 'XGROUP', 'DELCONSUMER', KEYS[1], group, c)
    redis.call('ZREM', KEYS[2], c)
    removed = removed + 1
  end
end
local ok, members = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], group)
if ok then
  local window = tonumber(ARGV[2])
  for _, info in ipairs(members) do
    if removed >= limit then break end
    local f = {}
    for i = 1, #info, 2 do f[info[i]] = info[i + 1] end
    if f['pending'] == 0 and f['idle'] >= window
        and not redis.call('ZSCORE', KEYS[2], f['name']) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], group, f['name'])
      removed = removed + 1
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]))
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[4]))
return removed
