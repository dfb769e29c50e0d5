-- Cancel a job that has not started: a scheduled one leaves the delayed
-- set; a queued one's stream entry is dropped when a worker reads it.
-- KEYS: 1 delayed, 2 stats
-- ARGV: 1 job key, 2 job id, 3 retention secs
-- Returns the status the job had ('' when there is no such job).
local status = redis.call('HGET', ARGV[1], 'status')
if not status then return '' end
if status == 'scheduled' or status == 'queued' then
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('HSET', ARGV[1], 'status', 'cancelled', 'finished_at', now)
  redis.call('EXPIRE', ARGV[1], tonumber(ARGV[3]))
  redis.call('HINCRBY', KEYS[2], 'cancelled', 1)
end
return status
