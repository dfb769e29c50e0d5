-- Drop from a shard's search index the jobs whose record is gone (past
-- its retention), a bounded number of entries a call, going on where the
-- last call stopped and starting over at the end.
-- KEYS: 1 the search index, 2 where the last sweep stopped
-- ARGV: 1 job key prefix (the job hashes share the shard's hash tag),
--       2 most entries to look at
-- Returns {entries looked at, entries dropped}.
local index, mark = KEYS[1], KEYS[2]
local prefix, count = ARGV[1], tonumber(ARGV[2])
local from = '-'
local last = redis.call('GET', mark)
if last then from = '(' .. last end
local page = redis.call('ZRANGEBYLEX', index, from, '+', 'LIMIT', 0, count)
local dropped = 0
for _, member in ipairs(page) do
  if redis.call('EXISTS', prefix .. string.sub(member, 17)) == 0 then
    redis.call('ZREM', index, member)
    dropped = dropped + 1
  end
end
if #page < count then
  redis.call('DEL', mark)
else
  redis.call('SET', mark, page[#page])
end
return { #page, dropped }
