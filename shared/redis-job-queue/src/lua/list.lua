-- One page of the jobs with a status, in a stable order, from a cursor.
-- KEYS: 1 the index: the delayed set (scheduled, by run time, soonest
--       first), the succeeded or failed set (by finish time, newest
--       first), or the normal lane's stream (queued and running: lane by
--       lane, high first, each oldest first); 2 high lane stream, 3 low
--       lane stream
-- ARGV: 1 job key prefix (of the hashes of the ids read from the
--       stream, in the queue's hash tag), 2 kind: 'asc' or 'desc' (a sorted set) or
--       'stream', 3 status wanted (for the stream), 4 cursor ('' for the
--       first page; 'score:id' for a set, an entry name for the streams),
--       5 page size, 6 most stream entries to look at
-- Returns {next cursor ('' when done), job ids...}.
local prefix, kind, want, cursor = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local limit = tonumber(ARGV[5])
local out = { '' }
if kind == 'stream' then
  local scan = tonumber(ARGV[6])
  local first, after = 1, nil
  if cursor ~= '' then
    local stream, bare = entry_stream(cursor)
    after = bare
    for n, lane in ipairs(LANES) do
      if lane.stream == stream then first = n end
    end
  end
  local last, looked = '', 0
  -- The largest entry id: nothing follows it in its lane (and XRANGE
  -- refuses a range that starts past it), the next lanes still do.
  local max_id = '18446744073709551615-18446744073709551615'
  for n = first, #LANES do
    local lane = LANES[n]
    local from = '-'
    if n == first and after then from = '(' .. after end
    local entries = {}
    if from ~= '(' .. max_id then
      entries = redis.call('XRANGE', lane.stream, from, '+', 'COUNT', scan - looked)
    end
    for _, e in ipairs(entries) do
      last = lane.prefix .. e[1]
      looked = looked + 1
      local id = ''
      for i = 1, #e[2], 2 do
        if e[2][i] == 'id' then id = e[2][i + 1] end
      end
      if redis.call('HGET', prefix .. id, 'status') == want then
        out[#out + 1] = id
        if #out - 1 >= limit then break end
      end
    end
    if looked >= scan or #out - 1 >= limit then
      out[1] = last
      return out
    end
  end
  return out
end
-- A sorted set, ordered by score, then by member (as Redis orders ties).
local score, after = nil, nil
if cursor ~= '' then
  local sep = string.find(cursor, ':', 1, true)
  score, after = tonumber(string.sub(cursor, 1, sep - 1)), string.sub(cursor, sep + 1)
end
local page = {}
if score then
  -- The rest of the cursor's score first.
  local same
  if kind == 'asc' then
    same = redis.call('ZRANGEBYSCORE', KEYS[1], score, score)
    for _, m in ipairs(same) do
      if m > after and #page < limit then page[#page + 1] = { m, score } end
    end
  else
    same = redis.call('ZREVRANGEBYSCORE', KEYS[1], score, score)
    for _, m in ipairs(same) do
      if m < after and #page < limit then page[#page + 1] = { m, score } end
    end
  end
end
if #page < limit then
  local rest
  if kind == 'asc' then
    local from = '-inf'
    if score then from = '(' .. score end
    rest = redis.call('ZRANGEBYSCORE', KEYS[1], from, '+inf', 'WITHSCORES',
      'LIMIT', 0, limit - #page)
  else
    local from = '+inf'
    if score then from = '(' .. score end
    rest = redis.call('ZREVRANGEBYSCORE', KEYS[1], from, '-inf', 'WITHSCORES',
      'LIMIT', 0, limit - #page)
  end
  for i = 1, #rest, 2 do page[#page + 1] = { rest[i], rest[i + 1] } end
end
for _, p in ipairs(page) do out[#out + 1] = p[1] end
if #page >= limit then
  local lastp = page[#page]
  out[1] = lastp[2] .. ':' .. lastp[1]
end
return out
