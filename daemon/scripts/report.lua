-- report.lua: sums of the hour-bucket report counters (docs/ANALYTICS.md) over periods.
-- ARGV[1] dimension (channel|queue|segment|branch|agent), ARGV[2] JSON array of period
-- boundaries in UTC hours [b0, b1, ..., bn] (period i covers hours b(i) .. b(i+1)-1; the
-- daemon sends at most ~800 hours per call). Reads one hash per hour, rp:<hour>, whose
-- fields are '<channel>|<queue>|<segment>|<branch>|<agent>|<metric>'. Returns JSON
-- {groups = [{value = {metric = n}}], totals = [{metric = n}]}, one element per period.
local POS = {channel = 1, queue = 2, segment = 3, branch = 4, agent = 5}
local pos = POS[ARGV[1]]
if not pos then return fail('ERR_INVALID', 'group_by: unknown dimension') end
local bounds = cjson.decode(ARGV[2])
-- ARGV[3]: most fields this call may read ([analytics] report_max_fields, shared among the
-- calls of one report): a report beyond it is refused instead of holding Redis for seconds
local budget = tonumber(ARGV[3]) or 1e18
-- ARGV[4] (optional): JSON array, per period, of the local days (their first UTC hours) it
-- is made of when it is whole days (interval day or week), else []; ARGV[5]: the zone. Such
-- a day is read from its day counters rd:<day>:<dim> ('<value>|<metric>', lib.lua rollup())
-- when the map 'rdays' is of that zone and the day is not before its 'from'; otherwise
-- (and for hour periods) from the hour hashes. The day counters hold the hours before the
-- fold mark 'rdays' 'folded' (lib.lua rollup()); a day's hours from the mark on (today's,
-- mostly) are added from their hour hashes, so a report includes what just happened.
local pdays = ARGV[4] and cjson.decode(ARGV[4]) or {}
local rdays = redis.call('HMGET', B .. 'rdays', 'zone', 'from', 'folded')
local day_from = (rdays[1] and rdays[1] == ARGV[5]) and tonumber(rdays[2]) or nil
local mark = tonumber(rdays[3]) or 1e15 -- no mark: every day counted directly
local function over()
  return fail('ERR_INVALID', 'report too large: more counter fields than [analytics] ' ..
              'report_max_fields allows; ask for a shorter period')
end
-- the field's value of the dimension and its metric, and nothing else: two captures instead
-- of six make a busy hour's ~7,000 fields a third cheaper to read
local field_pat = '^' .. string.rep('[^|]*|', pos - 1) .. '([^|]*)|' ..
                  string.rep('[^|]*|', 5 - pos) .. '([^|]*)$'
local function read_hours(g, t, h0, h1)
  for h = h0, h1 - 1 do
    local flat = redis.call('HGETALL', B .. 'rp:' .. h)
    budget = budget - #flat / 2
    if budget < 0 then return false end
    for i = 1, #flat, 2 do
      local v, m = string.match(flat[i], field_pat)
      if m then
        local n = tonumber(flat[i + 1])
        local gv = g[v]
        if not gv then gv = {}; g[v] = gv end
        gv[m] = (gv[m] or 0) + n
        t[m] = (t[m] or 0) + n
      end
    end
  end
  return true
end
-- one day from its counters: the totals from the channel hash (every figure has a channel);
-- by agent or branch, '-' (none, not kept per day) is the total minus the named ones
local function read_day(g, t, day)
  local pre = B .. 'rd:' .. day .. ':'
  local flat = redis.call('HGETALL', pre .. 'channel')
  budget = budget - #flat / 2
  local td = {}
  for i = 1, #flat, 2 do
    local v, m = string.match(flat[i], '^(.*)|([^|]*)$')
    if m then
      local n = tonumber(flat[i + 1])
      td[m] = (td[m] or 0) + n
      t[m] = (t[m] or 0) + n
      if pos == 1 then
        local gv = g[v]
        if not gv then gv = {}; g[v] = gv end
        gv[m] = (gv[m] or 0) + n
      end
    end
  end
  if pos ~= 1 then
    flat = redis.call('HGETALL', pre .. ARGV[1])
    budget = budget - #flat / 2
    for i = 1, #flat, 2 do
      local v, m = string.match(flat[i], '^(.*)|([^|]*)$')
      if m then
        local n = tonumber(flat[i + 1])
        local gv = g[v]
        if not gv then gv = {}; g[v] = gv end
        gv[m] = (gv[m] or 0) + n
        if pos >= 4 then td[m] = (td[m] or 0) - n end
      end
    end
    local any = false
    for _, n in pairs(td) do if n ~= 0 then any = true end end
    if pos >= 4 and any then
      local gv = g['-']
      if not gv then gv = {}; g['-'] = gv end
      for m, n in pairs(td) do gv[m] = (gv[m] or 0) + n end
    end
  end
  return budget >= 0
end
local groups, totals = {}, {}
for p = 1, #bounds - 1 do
  local g, t = {}, {}
  local ds = pdays[p]
  if day_from and type(ds) == 'table' and #ds > 0 then
    for i = 1, #ds do
      local d, e = ds[i], ds[i + 1] or bounds[p + 1]
      local ok
      if d < day_from then
        ok = read_hours(g, t, d, e)
      else
        ok = read_day(g, t, d) and (e <= mark or read_hours(g, t, math.max(d, mark), e))
      end
      if not ok then return over() end
    end
  elseif not read_hours(g, t, bounds[p], bounds[p + 1]) then
    return over()
  end
  groups[p] = g
  totals[p] = t
end
return cjson.encode({groups = groups, totals = totals})
