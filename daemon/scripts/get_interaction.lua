-- get_interaction.lua: ARGV[1] interaction id -> JSON of the interaction hash.
local h = redis.call('HGETALL', B .. 'ix:' .. ARGV[1])
if #h == 0 then return fail('ERR_NOT_FOUND', 'no interaction ' .. ARGV[1]) end
local t = hash_to_table(h)
for _, f in ipairs({'created_at', 'priority', 'wait_score'}) do
  if t[f] then t[f] = tonumber(t[f]) end
end
if t.metadata then t.metadata = cjson.decode(t.metadata) end
return cjson.encode(t)
