-- get_customer.lua: ARGV[1] 'id' or an identifier kind, ARGV[2] the id or the normalised
-- identifier -> JSON profile with identifiers, segment, cases, conflicts.
local cid
if ARGV[1] == 'id' then
  cid = ARGV[2]
else
  cid = redis.call('GET', B .. 'idx:' .. ARGV[1] .. ':' .. ARGV[2])
  if not cid then return fail('ERR_NOT_FOUND', 'no customer with that ' .. ARGV[1]) end
end
if redis.call('EXISTS', B .. 'cust:' .. cid) == 0 then
  return fail('ERR_NOT_FOUND', 'no customer ' .. cid)
end
local asked = cid
cid = resolve_customer(cid)
local ckey = B .. 'cust:' .. cid
local p = hash_to_table(redis.call('HGETALL', ckey))
for _, f in ipairs({'created_at', 'updated_at', 'annual_premium', 'tenure_years', 'claims_last_3y'}) do
  if p[f] then p[f] = tonumber(p[f]) end
end
if asked ~= cid then p.merged_from = asked end
local ids = {}
for _, m in ipairs(redis.call('SMEMBERS', ckey .. ':ids')) do
  local k, v = string.match(m, '^([^:]+):(.*)$')
  if k ~= 'ext' then ids[#ids + 1] = {type = k, value = v} end
end
table.sort(ids, function(a, b) return a.type .. a.value < b.type .. b.value end)
p.identifiers = ids
local cases = {}
for _, id in ipairs(redis.call('ZREVRANGE', ckey .. ':cases', 0, 49)) do
  local c = redis.call('HMGET', B .. 'case:' .. id, 'status', 'policy', 'updated_at', 'last_channel')
  cases[#cases + 1] = {id = id, status = c[1], policy = c[2], updated_at = tonumber(c[3]),
                       last_channel = c[4]}
end
p.cases = cases
local conflicts = {}
for _, c in ipairs(redis.call('LRANGE', ckey .. ':conflicts', -50, -1)) do
  conflicts[#conflicts + 1] = cjson.decode(c)
end
p.conflicts = conflicts
local segs = {}
for _, s in ipairs(redis.call('LRANGE', ckey .. ':segments', -20, -1)) do
  segs[#segs + 1] = cjson.decode(s)
end
p.segment_history = segs
return cjson.encode(p)
