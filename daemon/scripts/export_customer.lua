-- export_customer.lua: everything held on one person (data-subject access, docs/API.md
-- "Data rights"). ARGV[1] customer id, ARGV[2] actor. Cost: the customer's own keys, cases,
-- their history and interactions. Records the access in cust:<P>:access and the audit stream.
local asked = ARGV[1]
if redis.call('EXISTS', B .. 'cust:' .. asked) == 0 then return fail('ERR_NOT_FOUND', 'no customer ' .. asked) end
local cid = resolve_customer(asked)
local ck = B .. 'cust:' .. cid
local now = now_ms()
local out = {customer_id = cid, exported_at = now}
out.profile = hash_to_table(redis.call('HGETALL', ck))
out.identifiers = redis.call('SMEMBERS', ck .. ':ids')
local function json_list(key)
  local t = {}
  for _, s in ipairs(redis.call('LRANGE', key, 0, -1)) do t[#t + 1] = cjson.decode(s) end
  return t
end
out.segment_history = json_list(ck .. ':segments')
out.conflicts = json_list(ck .. ':conflicts')
out.merges = json_list(ck .. ':merges')
out.access_log = json_list(ck .. ':access')
local cases = {}
for _, id in ipairs(redis.call('ZRANGE', ck .. ':cases', 0, -1)) do
  local c = {case = hash_to_table(redis.call('HGETALL', B .. 'case:' .. id)), history = {}, interactions = {}}
  local seen = {}
  for _, e in ipairs(redis.call('XRANGE', B .. 'case:' .. id .. ':hist', '-', '+')) do
    local f = hash_to_table(e[2]); f.id = e[1]
    c.history[#c.history + 1] = f
    if f.interaction and not seen[f.interaction] then
      seen[f.interaction] = true
      local ix = hash_to_table(redis.call('HGETALL', B .. 'ix:' .. f.interaction))
      if ix.channel == 'webchat' and ix.external_id then
        local tr = {}
        for _, m in ipairs(redis.call('XRANGE', B .. 'chat:' .. ix.external_id .. ':events', '-', '+')) do
          local mf = hash_to_table(m[2]); mf.id = m[1]
          tr[#tr + 1] = mf
        end
        ix.chat_transcript = tr
      end
      c.interactions[#c.interactions + 1] = ix
    end
  end
  cases[#cases + 1] = c
end
out.cases = cases
local entry = cjson.encode({at = now, action = 'customer.export', actor = ARGV[2]})
redis.call('RPUSH', ck .. ':access', entry)
redis.call('XADD', B .. 'audit', '*', 'at', tostring(now), 'action', 'customer.export',
           'object', cid, 'actor', ARGV[2], 'detail', '')
return cjson.encode(out)
