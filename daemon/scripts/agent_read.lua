-- agent_read.lua: ARGV[1] 'one' | 'list' | 'auth', ARGV[2] agent id (one, auth) or cursor
-- (list: ids after it), ARGV[3] page size (list) or token sha (auth: '' = admin).
local function view(aid)
  local a = agent_get(aid)
  if not a then return nil end
  local out = {id = aid, name = a.name, presence = a.presence, reason = a.reason,
               activity = agent_activity(a), softphone = a.softphone, branch = a.branch,
               skills = cjson.decode(a.skills or '{}'), capacity = {}, load = {}, wrapup = {},
               capacity_total = tonumber(a.cap_total), load_total = tonumber(a.load_total),
               no_answer = tonumber(a.no_answer), queues = redis.call('SMEMBERS', B .. 'agent:' .. aid .. ':queues')}
  for _, ch in ipairs({'voice', 'email', 'fax', 'branch', 'webchat'}) do
    out.capacity[ch] = tonumber(a['cap:' .. ch])
    out.load[ch] = tonumber(a['load:' .. ch])
    out.wrapup[ch] = tonumber(a['wrap:' .. ch])
  end
  return out
end
if ARGV[1] == 'one' then
  local v = view(ARGV[2])
  if not v then return fail('ERR_NOT_FOUND', 'no agent ' .. ARGV[2]) end
  return cjson.encode(v)
elseif ARGV[1] == 'auth' then
  if redis.call('EXISTS', B .. 'agent:' .. ARGV[2]) == 0 then return fail('ERR_NOT_FOUND', 'no agent ' .. ARGV[2]) end
  if not agent_authorised(ARGV[2], ARGV[3]) then return fail('ERR_FORBIDDEN', 'token does not belong to agent ' .. ARGV[2]) end
  return 'ok'
end
local start = '-'
if ARGV[2] ~= '' then start = '(' .. ARGV[2] end
local limit = tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYLEX', B .. 'agents', start, '+', 'LIMIT', 0, limit + 1)
local out = {}
for i = 1, math.min(#ids, limit) do out[#out + 1] = view(ids[i]) end
local res = {agents = out}
if #ids > limit then res.next_cursor = ids[limit] end
return cjson.encode(res)
