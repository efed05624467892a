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
local groups, totals = {}, {}
for p = 1, #bounds - 1 do
  local g, t = {}, {}
  for h = bounds[p], bounds[p + 1] - 1 do
    local flat = redis.call('HGETALL', B .. 'rp:' .. h)
    budget = budget - #flat / 2
    if budget < 0 then
      return fail('ERR_INVALID', 'report too large: more hour-counter fields than [analytics] ' ..
                  'report_max_fields allows; ask for a shorter period')
    end
    for i = 1, #flat, 2 do
      local d = {string.match(flat[i], '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')}
      if d[6] then
        local v, m, n = d[pos], d[6], tonumber(flat[i + 1])
        local gv = g[v]
        if not gv then gv = {}; g[v] = gv end
        gv[m] = (gv[m] or 0) + n
        t[m] = (t[m] or 0) + n
      end
    end
  end
  groups[p] = g
  totals[p] = t
end
return cjson.encode({groups = groups, totals = totals})
