-- Move due delayed jobs onto the stream, at most ARGV[1] of them, and mark
-- them queued.
-- KEYS: 1 delayed, 2 stream
-- ARGV: 1 limit, 2 job key prefix
-- Returns {moved, next due ms or -1, server now ms}.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(due) do
  local key = ARGV[2] .. id
  if redis.call('HGET', key, 'status') == 'scheduled' then
    redis.call('HSET', key, 'status', 'queued')
  end
  redis.call('XADD', KEYS[2], '*', 'id', id)
  redis.call('ZREM', KEYS[1], id)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_due = -1
if nxt[2] then next_due = tonumber(nxt[2]) end
return {#due, next_due, now}
