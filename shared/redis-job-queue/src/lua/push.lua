-- Enqueue a batch of jobs.
-- KEYS: 1 stream, 2 delayed, 3 stats, 4 the search index, then the jobs'
--       own keys (each
--       job's hash, and its idempotency key and batch index when it has
--       them) as the per-job arguments point to them, and last the high
--       and low lanes' streams
-- ARGV: 1 idempotency window secs, 2 retention secs, then 13 per job: id,
--       payload, metadata JSON ('' for none), max attempts, delay ms (0 =
--       now; counted on the server's clock, like every time here),
--       timeout ms (0 = the queue's), fingerprint of what was asked,
--       priority ('high', 'low', or '' for normal), batch id ('' for
--       none), and the KEYS indexes of the job's hash, its idempotency
--       key and its batch index (0 for none), and its place in the batch
-- A job of a batch is listed in the batch's index, which lives at least
-- as long as the retention after the job may run (the finish script
-- extends it as the batch's jobs end).
-- Returns one integer per job: 1 enqueued; 0 refused (the id exists);
-- 2 a repeat (the idempotency key was used with the same fingerprint:
-- nothing enqueued); 3 a conflict (the key was used with another one).
local window, retention = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
local added = 0
-- The key a per-job argument points to, or nil for 0.
local function key_at(arg)
  local index = tonumber(arg)
  if index == 0 then return nil end
  return KEYS[index]
end
for i = 3, #ARGV, 13 do
  local id = ARGV[i]
  local key = key_at(ARGV[i + 9])
  local idem, fingerprint = key_at(ARGV[i + 10]), ARGV[i + 6]
  local seen = false
  if idem then
    seen = redis.call('GET', idem)
  end
  if seen then
    if seen == fingerprint then out[#out + 1] = 2 else out[#out + 1] = 3 end
  elseif redis.call('EXISTS', key) == 1 then
    out[#out + 1] = 0
  else
    local delay = tonumber(ARGV[i + 4])
    local run_at = now + delay
    local status = 'queued'
    if delay > 0 then status = 'scheduled' end
    -- Fields left out read as their defaults: no metadata, 0 attempts.
    local fields = { 'payload', ARGV[i + 1], 'status', status,
      'max_attempts', ARGV[i + 3], 'enqueued_at', now }
    if ARGV[i + 2] ~= '' then
      fields[#fields + 1] = 'meta'
      fields[#fields + 1] = ARGV[i + 2]
    end
    if delay > 0 then
      fields[#fields + 1] = 'run_at'
      fields[#fields + 1] = run_at
    end
    local priority, batch = ARGV[i + 7], ARGV[i + 8]
    if batch ~= '' then
      fields[#fields + 1] = 'batch'
      fields[#fields + 1] = batch
      fields[#fields + 1] = 'batch_pos'
      fields[#fields + 1] = ARGV[i + 12]
      local index = key_at(ARGV[i + 11])
      redis.call('RPUSH', index, id)
      local ttl = retention + math.ceil(delay / 1000)
      if redis.call('TTL', index) < ttl then
        redis.call('EXPIRE', index, ttl)
      end
    end
    if priority ~= '' then
      fields[#fields + 1] = 'priority'
      fields[#fields + 1] = priority
    end
    if tonumber(ARGV[i + 5]) > 0 then
      fields[#fields + 1] = 'timeout_ms'
      fields[#fields + 1] = ARGV[i + 5]
    end
    redis.call('HSET', key, unpack(fields))
    -- Searches read jobs in the order they were queued (see search.lua).
    redis.call('ZADD', KEYS[4], 0, string.format('%015d', now) .. ':' .. id)
    if delay > 0 then
      redis.call('ZADD', KEYS[2], run_at, id)
    else
      redis.call('XADD', lane_stream(priority), '*', 'id', id)
    end
    if idem then
      redis.call('SET', idem, fingerprint, 'EX', window)
    end
    out[#out + 1] = 1
    added = added + 1
  end
end
if added > 0 then
  redis.call('HINCRBY', KEYS[3], 'enqueued', added)
end
return out
