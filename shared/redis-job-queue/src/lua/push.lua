-- Enqueue a batch of jobs.
-- KEYS: 1 stream, 2 delayed, 3 stats
-- ARGV: 1 job key prefix, then 6 per job: id, payload, metadata JSON ('' for
--       none), max attempts, delay ms (0 = now; counted on the server's
--       clock, like every time here), timeout ms (0 = the queue's)
-- Returns one integer per job: 1 enqueued, 0 refused (the id exists).
local prefix = ARGV[1]
local out = {}
local added = 0
for i = 2, #ARGV, 6 do
  local id = ARGV[i]
  local key = prefix .. id
  if redis.call('EXISTS', key) == 1 then
    out[#out + 1] = 0
  else
    local delay = tonumber(ARGV[i + 4])
    local run_at = now + delay
    -- Fields left out read as their defaults: no metadata, 0 attempts.
    local fields = { 'payload', ARGV[i + 1], 'status', 'queued',
      'max_attempts', ARGV[i + 3], 'enqueued_at', now }
    if ARGV[i + 2] ~= '' then
      fields[#fields + 1] = 'meta'
      fields[#fields + 1] = ARGV[i + 2]
    end
    if delay > 0 then
      fields[#fields + 1] = 'run_at'
      fields[#fields + 1] = run_at
    end
    if tonumber(ARGV[i + 5]) > 0 then
      fields[#fields + 1] = 'timeout_ms'
      fields[#fields + 1] = ARGV[i + 5]
    end
    redis.call('HSET', key, unpack(fields))
    if delay > 0 then
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
