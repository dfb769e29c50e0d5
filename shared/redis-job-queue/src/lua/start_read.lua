-- Start the entries a blocking XREADGROUP (or XAUTOCLAIM) delivered.
-- ARGV from 5: pairs of stream entry id, job id.
local entries = {}
for i = 5, #ARGV do
  entries[#entries + 1] = ARGV[i]
end
return start(entries)
