-- Delete a finished job (succeeded, failed or cancelled) before its
-- retention ends: its record, its place in the failed and succeeded
-- indexes and in the search index. A job still to run, or running, is
-- left alone. (A cancelled job's stream entry, if any, is dropped by the
-- worker that reads it, as for any job whose record is gone.)
-- KEYS: 1 the job's hash, 2 failed, 3 succeeded, 4 the search index
-- ARGV: 1 the job's id
-- Returns {1 deleted, 0 unknown, 2 not finished; the status it had}.
local j = redis.call('HMGET', KEYS[1], 'status', 'enqueued_at')
if not j[1] then return { 0, '' } end
if j[1] ~= 'succeeded' and j[1] ~= 'failed' and j[1] ~= 'cancelled' then
  return { 2, j[1] }
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if j[2] then
  redis.call('ZREM', KEYS[4], string.format('%015d', tonumber(j[2])) .. ':' .. ARGV[1])
end
return { 1, j[1] }
