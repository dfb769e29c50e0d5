-- One consistent snapshot of a queue.
-- KEYS: 1 stream, 2 delayed, 3 failed, 4 stats, 5 consumers
-- ARGV: 1 group, 2 retention ms of the failed index, 3 lease ms (a
--       consumer silent longer is not counted live); server clock
-- Returns {stream length, pending, delayed, failed (retained),
--          live consumers, counters as a flat field/value list}.
local xlen = redis.call('XLEN', KEYS[1])
local pending = 0
local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1])
if ok then pending = p[1] end
return {
  xlen,
  pending,
  redis.call('ZCARD', KEYS[2]),
  redis.call('ZCOUNT', KEYS[3], '(' .. (now - tonumber(ARGV[2])), '+inf'),
  redis.call('ZCOUNT', KEYS[5], '(' .. (now - tonumber(ARGV[3])), '+inf'),
  redis.call('HGETALL', KEYS[4]),
}
