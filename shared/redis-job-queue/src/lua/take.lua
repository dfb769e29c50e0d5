-- Read up to ARGV[5] new entries without blocking and start them: one round
-- trip per batch while there is a backlog. An empty answer means the
-- caller should wait with a blocking read.
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3],
  'COUNT', tonumber(ARGV[5]), 'STREAMS', KEYS[1], '>')
if not reply then
  return {}
end
local entries = {}
for _, e in ipairs(reply[1][2]) do
  local fields, id = e[2], ''
  for i = 1, #fields, 2 do
    if fields[i] == 'id' then id = fields[i + 1] end
  end
  entries[#entries + 1] = e[1]
  entries[#entries + 1] = id
end
return start(entries)
