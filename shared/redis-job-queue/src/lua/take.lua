-- Read up to ARGV[5] new entries without blocking and start them: one round
-- trip per batch while there is a backlog. An empty answer means the
-- caller should wait with a blocking read.
-- Lanes are read high, normal, low: a waiting high job starts before any
-- waiting normal one. With ARGV[6] = '1' the low lane is read first (the
-- caller does so on a share of its reads), so low jobs never starve.
-- Paused: nothing is read or started, and the answer says so with one
-- row whose entry id is empty.
if paused() then return { '', 'paused', '', '', 0, 0, 0, 0, 0, '', 0 } end
local want = tonumber(ARGV[5])
local order = { LANES[1], LANES[2], LANES[3] }
if ARGV[6] == '1' then order = { LANES[3], LANES[1], LANES[2] } end
local entries = {}
for _, lane in ipairs(order) do
  local left = want - #entries / 2
  if left <= 0 then break end
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3],
    'COUNT', left, 'STREAMS', lane.stream, '>')
  if reply then
    for _, e in ipairs(reply[1][2]) do
      local fields, id = e[2], ''
      for i = 1, #fields, 2 do
        if fields[i] == 'id' then id = fields[i + 1] end
      end
      entries[#entries + 1] = lane.prefix .. e[1]
      entries[#entries + 1] = id
    end
  end
end
return start(entries)
