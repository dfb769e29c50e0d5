-- A consumer's heartbeat: mark it live and renew the leases of the entries
-- it still owns (an entry another consumer reclaimed is left alone).
-- KEYS: 1 stream, 2 consumers
-- ARGV: 1 group, 2 consumer, then the consumer's in-flight entry ids
-- Returns the number of leases renewed.
local group, consumer = ARGV[1], ARGV[2]
redis.call('ZADD', KEYS[2], now, consumer)
local renewed = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], group, ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == consumer then
    redis.call('XCLAIM', KEYS[1], group, consumer, 0, ARGV[i], 'JUSTID')
    renewed = renewed + 1
  end
end
return renewed
