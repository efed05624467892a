-- get_case.lua: ARGV[1] case id, ARGV[2] cursor (history entry id, exclusive; '' = start),
-- ARGV[3] page size -> JSON {case, history (oldest first), next_cursor}.
local h = redis.call('HGETALL', B .. 'case:' .. ARGV[1])
if #h == 0 then return fail('ERR_NOT_FOUND', 'no case ' .. ARGV[1]) end
local c = hash_to_table(h)
for _, f in ipairs({'created_at', 'updated_at'}) do
  if c[f] then c[f] = tonumber(c[f]) end
end
local limit = tonumber(ARGV[3])
local start = '-'
if ARGV[2] ~= '' then start = '(' .. ARGV[2] end
local entries = redis.call('XRANGE', B .. 'case:' .. ARGV[1] .. ':hist', start, '+', 'COUNT', limit + 1)
local hist = {}
for i = 1, math.min(#entries, limit) do
  local ev = hash_to_table(entries[i][2])
  ev.id = entries[i][1]
  if ev.at then ev.at = tonumber(ev.at) end
  hist[#hist + 1] = ev
end
local out = {case = c, history = hist}
if #entries > limit then out.next_cursor = entries[limit][1] end
return cjson.encode(out)
