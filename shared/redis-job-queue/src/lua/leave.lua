-- A consumer shutting down: give back jobs it took but never started, then
-- deregister it.
-- KEYS: 1 stream, 2 consumers, then the jobs' hashes as the arguments
--       point to them, and last the high and low lanes' streams
-- ARGV: 1 group, 2 consumer, then 4 per job: entry, job id, attempt, the
--       KEYS index of its hash
local group, consumer = ARGV[1], ARGV[2]
for i = 3, #ARGV, 4 do
  local entry, id, attempt = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = KEYS[tonumber(ARGV[i + 3])]
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
