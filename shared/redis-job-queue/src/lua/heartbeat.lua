-- A consumer's heartbeat: mark it live and renew the leases of the entries
-- it still owns (an entry another consumer reclaimed is left alone).
-- KEYS: 1 stream, 2 consumers, 3 high lane stream, 4 low lane stream
-- ARGV: 1 group, 2 consumer, then the consumer's in-flight entries
-- Returns the number of leases renewed.
local group, consumer = ARGV[1], ARGV[2]
redis.call('ZADD', KEYS[2], now, consumer)
local renewed = 0
for i = 3, #ARGV do
  local stream, bare = entry_stream(ARGV[i])
  local p = redis.call('XPENDING', stream, group, bare, bare, 1)
  if p[1] and p[1][2] == consumer then
    redis.call('XCLAIM', stream, group, consumer, 0, bare, 'JUSTID')
    renewed = renewed + 1
  end
end
return renewed
