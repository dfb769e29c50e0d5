-- One page of a shard's jobs that match a search, in the order they were
-- queued, from a cursor.
-- KEYS: 1 the shard's search index (a sorted set, every score 0, members
--       '{queued at: ms, 15 digits}:{id}', so they sort by time, then id)
-- ARGV: 1 job key prefix (the job hashes share the shard's hash tag),
--       2 order: 'asc' (oldest first) or 'desc', 3 cursor ('' for the
--       first page, else a member: go on after it), 4 lower bound ('-' or
--       '[' .. member prefix), 5 upper bound ('+' or '(' .. member
--       prefix), 6 page size, 7 most index entries to look at,
--       8 status, 9 error type, 10 priority ('normal' for none stored),
--       11 batch id ('' for any of them), 12 a payload path ('a.b') to a
--       text ('' for none), 13 the lower-case prefix it must start with,
--       14 and 15 payload paths to a latitude and a longitude ('' for
--       none), 16 to 19 the box: south, west, north, east (a west past
--       east crosses the antimeridian)
-- Returns {where the scan stopped ('' when the range is done), the
-- matching members...}. A page may hold fewer than the page size while
-- the scan goes on: it looked at as many entries as it may. Members whose
-- job is gone (past its retention) leave the index on the way.
local index, prefix, order, cursor = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local low, high = ARGV[4], ARGV[5]
local limit, budget = tonumber(ARGV[6]), tonumber(ARGV[7])
local status, error_type, priority, batch = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local text_path, text_prefix = ARGV[12], ARGV[13]
local lat_path, lon_path = ARGV[14], ARGV[15]
local south, west = tonumber(ARGV[16]), tonumber(ARGV[17])
local north, east = tonumber(ARGV[18]), tonumber(ARGV[19])
local needs_payload = text_path ~= '' or lat_path ~= ''

-- The value at a dotted path of a decoded payload.
local function at(value, path)
  for part in string.gmatch(path, '[^.]+') do
    if type(value) ~= 'table' then return nil end
    value = value[part]
  end
  return value
end

-- Whether the job (its fields) matches; nil when its record is gone.
local function matches(j)
  if not j[1] then return nil end
  if status ~= '' and j[1] ~= status then return false end
  if error_type ~= '' and j[2] ~= error_type then return false end
  if priority ~= '' and (j[3] or 'normal') ~= priority then return false end
  if batch ~= '' and j[4] ~= batch then return false end
  if not needs_payload then return true end
  local ok, payload = pcall(cjson.decode, j[5] or '')
  if not ok then return false end
  if text_path ~= '' then
    local text = at(payload, text_path)
    if type(text) ~= 'string' then return false end
    text = string.lower(string.match(text, '^%s*(.-)%s*$'))
    if string.sub(text, 1, #text_prefix) ~= text_prefix then return false end
  end
  if lat_path ~= '' then
    local lat, lon = at(payload, lat_path), at(payload, lon_path)
    if type(lat) ~= 'number' or type(lon) ~= 'number' then return false end
    if lat < south or lat > north then return false end
    if west <= east then
      if lon < west or lon > east then return false end
    elseif lon < west and lon > east then
      return false
    end
  end
  return true
end

local out = { '' }
local looked, pos = 0, cursor
while looked < budget do
  local n = math.min(256, budget - looked)
  local page
  if order == 'asc' then
    local from = low
    if pos ~= '' and (low == '-' or pos >= string.sub(low, 2)) then from = '(' .. pos end
    page = redis.call('ZRANGEBYLEX', index, from, high, 'LIMIT', 0, n)
  else
    local from = high
    if pos ~= '' and (high == '+' or pos < string.sub(high, 2)) then from = '(' .. pos end
    page = redis.call('ZREVRANGEBYLEX', index, from, low, 'LIMIT', 0, n)
  end
  for _, member in ipairs(page) do
    looked, pos = looked + 1, member
    local id = string.sub(member, 17)
    local found = matches(redis.call('HMGET', prefix .. id,
      'status', 'error_type', 'priority', 'batch', 'payload'))
    if found == nil then
      redis.call('ZREM', index, member)
    elseif found then
      out[#out + 1] = member
      if #out - 1 >= limit then
        out[1] = member
        return out
      end
    end
  end
  if #page < n then return out end
end
out[1] = pos
return out
