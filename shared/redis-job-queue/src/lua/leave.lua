-- A consumer shutting down: give back jobs it took but never started, then
-- deregister it.
-- KEYS: 1 stream, 2 consumers, 3 high lane stream, 4 low lane stream
-- ARGV: 1 job key prefix, 2 group, 3 consumer, then triples:
--       entry, job id, attempt
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV, 3 do
  local entry, id, attempt = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = prefix .. id
  local j = redis.call('HMGET', key, 'status', 'attempts', 'worker')
  if j[1] == 'running' and j[2] == attempt and j[3] == consumer then
    local stream, bare = entry_stream(entry)
    redis.call('HSET', key, 'status', 'queued', 'attempts', tonumber(attempt) - 1)
    redis.call('HDEL', key, 'worker', 'started_at')
    redis.call('XACK', stream, group, bare)
    redis.call('XDEL', stream, bare)
    redis.call('XADD', stream, '*', 'id', id)
  end
end
-- With nothing pending in any lane the consumer goes at once. With jobs
-- still pending (outcomes that could not be recorded) it stays in the set,
-- marked silent since forever, so the reaper deletes it once others
-- reclaimed them.
local holds = false
for _, lane in ipairs(LANES) do
  local ok, p = pcall(redis.call, 'XPENDING', lane.stream, group, '-', '+', 1, consumer)
  if ok and #p > 0 then holds = true end
end
if holds then
  redis.call('ZADD', KEYS[2], 0, consumer)
else
  redis.call('ZREM', KEYS[2], consumer)
  for _, lane in ipairs(LANES) do
    pcall(redis.call, 'XGROUP', 'DELCONSUMER', lane.stream, group, consumer)
  end
end
return 1
