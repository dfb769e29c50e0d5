-- One consistent snapshot of a queue.
-- KEYS: 1 stream, 2 delayed, 3 failed, 4 stats, 5 consumers, 6 the paused
--       mark, 7 high lane stream, 8 low lane stream
-- ARGV: 1 group, 2 retention ms of the failed index, 3 lease ms (a
--       consumer silent longer is not counted live); server clock
-- Returns {delayed, failed (retained), live consumers, counters as a flat
--          field/value list, then per lane (high, normal, low) {stream
--          length, pending}, then 1 while paused, else 0}.
local out = {
  redis.call('ZCARD', KEYS[2]),
  redis.call('ZCOUNT', KEYS[3], '(' .. (now - tonumber(ARGV[2])), '+inf'),
  redis.call('ZCOUNT', KEYS[5], '(' .. (now - tonumber(ARGV[3])), '+inf'),
  redis.call('HGETALL', KEYS[4]),
}
for _, lane in ipairs(LANES) do
  local pending = 0
  local ok, p = pcall(redis.call, 'XPENDING', lane.stream, ARGV[1])
  if ok then pending = p[1] end
  out[#out + 1] = { redis.call('XLEN', lane.stream), pending }
end
out[#out + 1] = redis.call('EXISTS', KEYS[6])
return out
