-- Cancel a job that has not started: a scheduled one leaves the delayed
-- set; a queued one's stream entry is dropped when a worker reads it.
-- KEYS: 1 delayed, 2 stats, 3 the job's hash
-- ARGV: 1 job id, 2 retention secs
-- Returns the status the job had ('' when there is no such job).
local status = redis.call('HGET', KEYS[3], 'status')
if not status then return '' end
if status == 'scheduled' or status == 'queued' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[3], 'status', 'cancelled', 'finished_at', now)
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[2]))
  redis.call('HINCRBY', KEYS[2], 'cancelled', 1)
end
return status
