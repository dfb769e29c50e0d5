-- Move due delayed jobs onto their lane's stream, at most ARGV[1] of them,
-- and mark them queued.
-- KEYS: 1 stream, 2 delayed, 3 high lane stream, 4 low lane stream
-- ARGV: 1 limit, 2 job key prefix (of the hashes of the ids read from
--       the delayed set, in the queue's hash tag)
-- Returns {moved, next due ms or -1, server now ms}.
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(due) do
  local key = ARGV[2] .. id
  local j = redis.call('HMGET', key, 'status', 'priority')
  if j[1] == 'scheduled' then
    redis.call('HSET', key, 'status', 'queued')
  end
  redis.call('XADD', lane_stream(j[2]), '*', 'id', id)
  redis.call('ZREM', KEYS[2], id)
end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local next_due = -1
if nxt[2] then next_due = tonumber(nxt[2]) end
return {#due, next_due, now}
