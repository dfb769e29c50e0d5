-- Enqueue a batch of jobs.
-- KEYS: 1 stream, 2 delayed, 3 stats
-- ARGV: 1 job key prefix, then 5 per job: id, payload, metadata JSON,
--       max attempts, run-at ms (0 = now)
-- Returns one integer per job: 1 enqueued, 0 refused (the id exists).
local prefix = ARGV[1]
local out = {}
local added = 0
for i = 2, #ARGV, 5 do
  local id = ARGV[i]
  local key = prefix .. id
  if redis.call('EXISTS', key) == 1 then
    out[#out + 1] = 0
  else
    local run_at = tonumber(ARGV[i + 4])
    redis.call('HSET', key, 'payload', ARGV[i + 1], 'meta', ARGV[i + 2],
      'status', 'queued', 'attempts', 0, 'max_attempts', ARGV[i + 3],
      'enqueued_at', now)
    if run_at > now then
      redis.call('HSET', key, 'run_at', run_at)
      redis.call('ZADD', KEYS[2], run_at, id)
    else
      redis.call('XADD', KEYS[1], '*', 'id', id)
    end
    out[#out + 1] = 1
    added = added + 1
  end
end
if added > 0 then
  redis.call('HINCRBY', KEYS[3], 'enqueued', added)
end
return out
