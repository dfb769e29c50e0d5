-- A consumer shutting down: give back jobs it took but never started, then
-- deregister it.
-- KEYS: 1 stream, 2 consumers
-- ARGV: 1 job key prefix, 2 group, 3 consumer, then triples:
--       entry id, job id, attempt
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV, 3 do
  local entry, id, attempt = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = prefix .. id
  local j = redis.call('HMGET', key, 'status', 'attempts', 'worker')
  if j[1] == 'running' and j[2] == attempt and j[3] == consumer then
    redis.call('HSET', key, 'status', 'queued', 'attempts', tonumber(attempt) - 1)
    redis.call('HDEL', key, 'worker', 'started_at')
    redis.call('XACK', KEYS[1], group, entry)
    redis.call('XDEL', KEYS[1], entry)
    redis.call('XADD', KEYS[1], '*', 'id', id)
  end
end
-- With nothing pending the consumer goes at once. With jobs still pending
-- (outcomes that could not be recorded) it stays in the set, marked silent
-- since forever, so the reaper deletes it once others reclaimed them.
local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], group, '-', '+', 1, consumer)
if ok and #p == 0 then
  redis.call('ZREM', KEYS[2], consumer)
  pcall(redis.call, 'XGROUP', 'DELCONSUMER', KEYS[1], group, consumer)
else
  redis.call('ZADD', KEYS[2], 0, consumer)
end
return 1
