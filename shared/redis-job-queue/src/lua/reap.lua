-- Housekeeping: forget consumers that stopped heart-beating once nothing is
-- pending on them in any lane (their jobs were reclaimed), and trim the
-- failed and succeeded indexes.
-- Each lane's group is scanned too: a consumer it still has but the live
-- set does not (one that left with jobs pending, or older leftovers) is
-- deleted there once it holds nothing and has been idle for the stale
-- window.
-- KEYS: 1 stream, 2 consumers, 3 failed, 4 succeeded, 5 high lane stream,
--       6 low lane stream
-- ARGV: 1 group, 2 stale window ms (silent this long: dead), 3 limit,
--       4 retention ms of the failed and succeeded indexes
-- Times are the server's: no host clock takes part.
local group = ARGV[1]
local limit = tonumber(ARGV[3])
local window = tonumber(ARGV[2])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - window, 'LIMIT', 0, limit)
local removed = 0
for _, c in ipairs(stale) do
  local holds = false
  for _, lane in ipairs(LANES) do
    local ok, p = pcall(redis.call, 'XPENDING', lane.stream, group, '-', '+', 1, c)
    if ok and #p > 0 then holds = true end
  end
  if not holds then
    for _, lane in ipairs(LANES) do
      pcall(redis.call, 'XGROUP', 'DELCONSUMER', lane.stream, group, c)
    end
    redis.call('ZREM', KEYS[2], c)
    removed = removed + 1
  end
end
for _, lane in ipairs(LANES) do
  local ok, members = pcall(redis.call, 'XINFO', 'CONSUMERS', lane.stream, group)
  if ok then
    for _, info in ipairs(members) do
      if removed >= limit then break end
      local f = {}
      for i = 1, #info, 2 do f[info[i]] = info[i + 1] end
      if f['pending'] == 0 and f['idle'] >= window
          and not redis.call('ZSCORE', KEYS[2], f['name']) then
        redis.call('XGROUP', 'DELCONSUMER', lane.stream, group, f['name'])
        removed = removed + 1
      end
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]))
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[4]))
return removed
