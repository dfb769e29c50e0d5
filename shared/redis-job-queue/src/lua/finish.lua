-- Record the outcomes of a batch of attempts and acknowledge their entries.
-- KEYS: 1 stream, 2 delayed, 3 failed, 4 stats, 5 succeeded, 6 outbox,
--       then the jobs' hashes and batch indexes as the per-attempt
--       arguments point to them, and last the high and low lanes' streams
-- ARGV: 1 group, 2 retention secs, 3 most events the outbox holds, then 15
--       per attempt: consumer, entry id, job id, attempt, outcome
--       (ok|retry|fail|defer), result JSON or error text (for a deferral,
--       its reason), retry delay ms (from the server's now), a JSON object
--       of metadata to merge in for a later attempt ('' for none; kept on
--       failure too, for a re-drive), the error's type ('' for none), the
--       KEYS indexes of the job's hash and of its batch's index (0: not in
--       a batch), and the event to publish on success: its key ('' for
--       none), message id, payload and trace context (JSON)
-- Returns one integer per attempt: 1 recorded; 3 recorded, but the outbox
-- was full and the event is dropped (counted in the stats as
-- outbox_dropped); 0 when the attempt is stale (its lease expired and a
-- newer attempt owns the job, so it must not overwrite it); 2 when the
-- job's record is gone (a running job's record never expires, so Redis
-- lost its data: restarted empty, say).
-- Outcomes may arrive long after the attempt ended (kept by the worker
-- through an outage): the fence below makes that safe. The event goes in
-- with the success, in this one script: neither is ever kept without the
-- other.
local group = ARGV[1]
local retention = tonumber(ARGV[2])
local outbox_max = tonumber(ARGV[3])
local dropped = 0
local out = {}
local counts = { succeeded = 0, retried = 0, failed = 0, deferred = 0 }
-- Entries to acknowledge and delete, by stream, and the succeeded index's
-- new members: each sent in one command after the loop (one call per
-- batch costs Redis far less than one per job).
local acks, streams, succeeded = {}, {}, {}
-- A job that ends keeps its batch's index for as long as its own record.
local function keep_batch(index)
  if not index then return end
  if redis.call('TTL', index) < retention then
    redis.call('EXPIRE', index, retention)
  end
end
-- Merges a JSON object of metadata into the job's.
local function carry(key, extra)
  if extra == '' then return end
  local stored = redis.call('HGET', key, 'meta')
  local meta = {}
  if stored and stored ~= '' then meta = cjson.decode(stored) end
  for k, v in pairs(cjson.decode(extra)) do meta[k] = v end
  redis.call('HSET', key, 'meta', cjson.encode(meta))
end
for i = 4, #ARGV, 15 do
  local consumer, entry, id, attempt, outcome, value =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local error_type = ARGV[i + 8]
  local key = KEYS[tonumber(ARGV[i + 9])]
  local batch_index = nil
  if ARGV[i + 10] ~= '0' then batch_index = KEYS[tonumber(ARGV[i + 10])] end
  local j = redis.call('HMGET', key, 'status', 'attempts', 'worker',
    'error', 'error_type')
  if not j[1] then
    out[#out + 1] = 2
  elseif j[1] ~= 'running' or j[2] ~= attempt or j[3] ~= consumer then
    out[#out + 1] = 0
  else
    local stream, bare = entry_stream(entry)
    if not acks[stream] then
      acks[stream] = {}
      streams[#streams + 1] = stream
    end
    local ids = acks[stream]
    ids[#ids + 1] = bare
    if outcome == 'ok' then
      redis.call('HSET', key, 'status', 'succeeded', 'result', value, 'finished_at', now)
      -- Clear an earlier attempt's error, if there is one.
      if j[4] or j[5] then redis.call('HDEL', key, 'error', 'error_type') end
      redis.call('EXPIRE', key, retention)
      succeeded[#succeeded + 1] = now
      succeeded[#succeeded + 1] = id
      keep_batch(batch_index)
      counts.succeeded = counts.succeeded + 1
      local recorded = 1
      if ARGV[i + 11] ~= '' then
        if redis.call('XLEN', KEYS[6]) < outbox_max then
          redis.call('XADD', KEYS[6], '*', 'key', ARGV[i + 11], 'id', ARGV[i + 12],
            'payload', ARGV[i + 13], 'context', ARGV[i + 14])
        else
          dropped = dropped + 1
          recorded = 3
        end
      end
      out[#out + 1] = recorded
    else
      carry(key, ARGV[i + 7])
      if outcome == 'defer' then
        -- A deferral is no error: the job's last error stays as it was.
      elseif error_type ~= '' then
        redis.call('HSET', key, 'error_type', error_type)
      else
        redis.call('HDEL', key, 'error_type')
      end
      if outcome == 'defer' then
        -- Not an attempt: the attempt number is given back, so the next
        -- run has this one's, and the delay adds to the job's total.
        local delay = tonumber(ARGV[i + 6])
        local retry_at = now + delay
        redis.call('HSET', key, 'status', 'scheduled', 'run_at', retry_at,
          'attempts', tonumber(attempt) - 1, 'deferred_reason', value)
        redis.call('HINCRBY', key, 'deferred_ms', delay)
        redis.call('HINCRBY', key, 'deferrals', 1)
        redis.call('ZADD', KEYS[2], retry_at, id)
        counts.deferred = counts.deferred + 1
      elseif outcome == 'retry' then
        local retry_at = now + tonumber(ARGV[i + 6])
        redis.call('HSET', key, 'status', 'scheduled', 'error', value, 'run_at', retry_at)
        redis.call('ZADD', KEYS[2], retry_at, id)
        counts.retried = counts.retried + 1
      else
        redis.call('HSET', key, 'status', 'failed', 'error', value, 'finished_at', now)
        redis.call('EXPIRE', key, retention)
        redis.call('ZADD', KEYS[3], now, id)
        keep_batch(batch_index)
        counts.failed = counts.failed + 1
      end
      out[#out + 1] = 1
    end
  end
end
-- Sends `command` with `head` and then `list`'s items as arguments, in
-- slices that stay within Lua's limit on unpacked values.
local function each_slice(list, command, head)
  for first = 1, #list, 1000 do
    local args = { unpack(head) }
    for i = first, math.min(first + 999, #list) do args[#args + 1] = list[i] end
    redis.call(command, unpack(args))
  end
end
for _, stream in ipairs(streams) do
  each_slice(acks[stream], 'XACK', { stream, group })
  each_slice(acks[stream], 'XDEL', { stream })
end
each_slice(succeeded, 'ZADD', { KEYS[5] })
if dropped > 0 then counts.outbox_dropped = dropped end
for name, n in pairs(counts) do
  if n > 0 then redis.call('HINCRBY', KEYS[4], name, n) end
end
-- The indexes hold what the retention keeps: trim them as they grow, and
-- let each expire with its newest entry, so an idle queue keeps none.
if counts.failed > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - retention * 1000)
  redis.call('EXPIRE', KEYS[3], retention)
end
if counts.succeeded > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - retention * 1000)
  redis.call('EXPIRE', KEYS[5], retention)
end
return out
