-- Record the outcome of one attempt and acknowledge its stream entry.
-- KEYS: 1 stream, 2 delayed, 3 failed, 4 stats
-- ARGV: 1 job key prefix, 2 group, 3 consumer, 4 retention secs,
--       5 entry id, 6 job id, 7 attempt, 8 outcome (ok|retry|fail),
--       9 result JSON or error text, 10 retry-at ms
-- Returns 1, or 0 when the attempt is stale: its lease expired and a newer
-- attempt owns the job, so this one must not overwrite it.
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local retention = tonumber(ARGV[4])
local entry, id, attempt, outcome, value = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local key = prefix .. id
local j = redis.call('HMGET', key, 'status', 'attempts', 'worker')
if j[1] ~= 'running' or j[2] ~= attempt or j[3] ~= consumer then
  return 0
end
redis.call('XACK', KEYS[1], group, entry)
redis.call('XDEL', KEYS[1], entry)
if outcome == 'ok' then
  redis.call('HSET', key, 'status', 'succeeded', 'result', value, 'finished_at', now)
  redis.call('HDEL', key, 'error')
  redis.call('EXPIRE', key, retention)
  redis.call('HINCRBY', KEYS[4], 'succeeded', 1)
elseif outcome == 'retry' then
  local retry_at = tonumber(ARGV[10])
  redis.call('HSET', key, 'status', 'queued', 'error', value, 'run_at', retry_at)
  redis.call('ZADD', KEYS[2], retry_at, id)
  redis.call('HINCRBY', KEYS[4], 'retried', 1)
else
  redis.call('HSET', key, 'status', 'failed', 'error', value, 'finished_at', now)
  redis.call('EXPIRE', key, retention)
  redis.call('ZADD', KEYS[3], now, id)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - retention * 1000)
  redis.call('HINCRBY', KEYS[4], 'failed', 1)
end
return 1
