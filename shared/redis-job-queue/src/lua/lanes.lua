-- Priority lanes (a part prepended to the scripts that touch streams).
-- Each lane has a stream of its own, read by the same consumer group: the
-- normal lane's is the queue's stream, KEYS[1]; the high and low lanes'
-- are always the last two keys. Outside the scripts an entry is named by
-- its stream id with the lane in front (`h:` high, `l:` low, nothing for
-- normal), so entries of every lane share one name space.
local HIGH_STREAM, LOW_STREAM = KEYS[#KEYS - 1], KEYS[#KEYS]
-- Every lane's stream and the prefix of its entries, in the order a
-- worker takes them.
local LANES = {
  { stream = HIGH_STREAM, prefix = 'h:' },
  { stream = KEYS[1], prefix = '' },
  { stream = LOW_STREAM, prefix = 'l:' },
}
-- The stream of the lane of a job's `priority` field (nil: normal).
local function lane_stream(priority)
  if priority == 'high' then return HIGH_STREAM end
  if priority == 'low' then return LOW_STREAM end
  return KEYS[1]
end
-- The stream an entry name points into, and its id there.
local function entry_stream(entry)
  local p = string.sub(entry, 1, 2)
  if p == 'h:' then return HIGH_STREAM, string.sub(entry, 3) end
  if p == 'l:' then return LOW_STREAM, string.sub(entry, 3) end
  return KEYS[1], entry
end
