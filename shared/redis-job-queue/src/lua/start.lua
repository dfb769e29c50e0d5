-- Mark the jobs of delivered stream entries as running (a function, shared
-- by start_read.lua and take.lua).
-- KEYS: 1 stream, 2 failed, 3 stats, 4 the paused mark, 5 high lane
--       stream, 6 low lane stream
-- ARGV: 1 job key prefix (see below), 2 group, 3 consumer, 4 retention secs
-- `entries` is a flat list: stream entry id, job id, ...
-- Returns 11 values per started job: entry id, job id, payload, metadata,
-- attempt number, max attempts, enqueued-at ms, timeout ms (0: the
-- queue's), started-at ms (the server's now, so the queue wait is
-- measured on one clock), batch id ('' for none), and the ms the job was
-- deferred so far (finish.lua's 'defer').
-- The job hashes are reached by the ids the entries carry: the job-hash
-- prefix (ARGV[1]) plus the id, in the queue's hash tag. Entries whose job is gone, finished or cancelled
-- are dropped; jobs past their attempt budget, and malformed records, are
-- failed here. While the queue is paused (KEYS[4] exists) nothing starts:
-- entries of queued jobs (a blocking read that was waiting when the pause
-- came) are given back to their lane, as a stopping worker gives them
-- back; others (a reclaim's) stay pending, to be reclaimed after.
local function paused()
  return redis.call('EXISTS', KEYS[4]) == 1
end
local function start(entries)
  if paused() then
    for i = 1, #entries, 2 do
      local entry, id = entries[i], entries[i + 1]
      if redis.call('HGET', ARGV[1] .. id, 'status') == 'queued' then
        local stream, bare = entry_stream(entry)
        redis.call('XACK', stream, ARGV[2], bare)
        redis.call('XDEL', stream, bare)
        redis.call('XADD', stream, '*', 'id', id)
      end
    end
    return {}
  end
  local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
  local retention = tonumber(ARGV[4])
  local out = {}
  -- Fails job `id` for good with `error` and acknowledges its entry.
  local function fail(key, entry, id, error)
    redis.call('HSET', key, 'status', 'failed', 'finished_at', now, 'error', error)
    redis.call('EXPIRE', key, retention)
    local stream, bare = entry_stream(entry)
    redis.call('XACK', stream, group, bare)
    redis.call('XDEL', stream, bare)
    redis.call('ZADD', KEYS[2], now, id)
    redis.call('EXPIRE', KEYS[2], retention)
    redis.call('HINCRBY', KEYS[3], 'failed', 1)
  end
  for i = 1, #entries, 2 do
    local entry, id = entries[i], entries[i + 1]
    local key = prefix .. id
    local j = redis.call('HMGET', key, 'status', 'attempts', 'max_attempts',
      'payload', 'meta', 'enqueued_at', 'timeout_ms', 'batch', 'deferred_ms')
    local status = j[1]
    local attempts, max = tonumber(j[2] or '0'), tonumber(j[3])
    if (not status) or status == 'succeeded' or status == 'failed'
        or status == 'cancelled' then
      local stream, bare = entry_stream(entry)
      redis.call('XACK', stream, group, bare)
      redis.call('XDEL', stream, bare)
    elseif (not attempts) or (not max) or (not j[4]) then
      -- Written by hand or by another program: fail it, saying what is
      -- wrong, rather than trip on it at every read.
      fail(key, entry, id, 'malformed job record: it needs a payload and ' ..
        'numeric attempts and max_attempts fields')
    else
      local attempt = attempts + 1
      if max > 0 and attempt > max then
        fail(key, entry, id, 'gave up after ' .. max .. ' attempts: the worker ' ..
          'running it stopped renewing its lease (crashed or stalled)')
      else
        redis.call('HSET', key, 'status', 'running', 'attempts', attempt,
          'started_at', now, 'worker', consumer)
        out[#out + 1] = entry
        out[#out + 1] = id
        out[#out + 1] = j[4]
        out[#out + 1] = j[5] or ''
        out[#out + 1] = attempt
        out[#out + 1] = max
        out[#out + 1] = j[6]
        out[#out + 1] = tonumber(j[7]) or 0
        out[#out + 1] = now
        out[#out + 1] = j[8] or ''
        out[#out + 1] = tonumber(j[9]) or 0
      end
    end
  end
  return out
end
