-- Re-drive failed jobs: each runs again as its next attempt, with a fresh
-- attempt budget, and its metadata keeps what the failed attempt carried
-- (its span, for the new attempt to link to).
-- KEYS: 1 stream, 2 failed, 3 stats, (one only:) 4 the job's hash, and
--       last the high and low lanes' streams
-- ARGV: 1 job key prefix (all: the hashes of the ids read from the
--       failed set, in the queue's hash tag), 2 mode: 'one' or 'all', 3
--       job id (one) or the error type to match ('' for any; all), 4 most
--       jobs to re-drive (all), 5 most failed entries to look at (all)
-- Returns {re-driven, looked at, status before (one; '' when unknown)}.
local prefix, mode = ARGV[1], ARGV[2]
local function redrive(id, key)
  local j = redis.call('HMGET', key, 'attempts', 'max_attempts', 'budget', 'priority')
  local attempts = tonumber(j[1]) or 0
  local budget = tonumber(j[3]) or tonumber(j[2]) or 1
  redis.call('HSET', key, 'status', 'queued', 'budget', budget,
    'max_attempts', attempts + budget)
  redis.call('HDEL', key, 'finished_at', 'run_at')
  redis.call('PERSIST', key)
  redis.call('ZREM', KEYS[2], id)
  redis.call('XADD', lane_stream(j[4]), '*', 'id', id)
  redis.call('HINCRBY', KEYS[3], 'redriven', 1)
end
if mode == 'one' then
  local status = redis.call('HGET', KEYS[4], 'status')
  if status == 'failed' then
    redrive(ARGV[3], KEYS[4])
    return {1, 1, status}
  end
  return {0, 1, status or ''}
end
local want, limit, scan = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local ids = redis.call('ZRANGE', KEYS[2], 0, scan - 1)
local done = 0
for _, id in ipairs(ids) do
  if done >= limit then break end
  local key = prefix .. id
  local j = redis.call('HMGET', key, 'status', 'error_type')
  if j[1] == 'failed' and (want == '' or j[2] == want) then
    redrive(id, key)
    done = done + 1
  elseif not j[1] then
    -- Its record expired: drop it from the index.
    redis.call('ZREM', KEYS[2], id)
  end
end
return {done, #ids, ''}
