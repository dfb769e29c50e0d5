-- Start the entries a blocking XREADGROUP (or XAUTOCLAIM) delivered.
-- ARGV from 5: pairs of entry name (lane and stream id), job id.
-- Between the delivery and this call the caller may have stalled past the
-- lease and another consumer claimed an entry: only entries the caller
-- still owns are started (the others are the new owner's to run).
local group, consumer = ARGV[2], ARGV[3]
local entries = {}
for i = 5, #ARGV, 2 do
  local stream, bare = entry_stream(ARGV[i])
  local p = redis.call('XPENDING', stream, group, bare, bare, 1)
  if p[1] and p[1][2] == consumer then
    entries[#entries + 1] = ARGV[i]
    entries[#entries + 1] = ARGV[i + 1]
  end
end
return start(entries)
