-- agent_upsert.lua: ARGV[1] 'create' | 'update', ARGV[2] agent JSON {id, name, skills,
-- capacity {ch: n}, capacity_total, wrapup {ch: s}, softphone, branch, queues [...],
-- pools [...]} where queues are the queues the daemon found the agent eligible for and
-- pools their '<channel> <pool>' (lib.lua). Cost: the agent's own queues and pools (old
-- and new) x channels.
local mode, a = ARGV[1], cjson.decode(ARGV[2])
local now = now_ms()
local key = B .. 'agent:' .. a.id
local old = agent_get(a.id)
if mode == 'create' and old then return fail('ERR_CONFLICT', 'agent ' .. a.id .. ' already exists') end
if mode == 'update' and not old then return fail('ERR_NOT_FOUND', 'no agent ' .. a.id) end
if old then agent_reindex(a.id, nil, agent_activity(old)) end
if not old then
  redis.call('HSET', key, 'id', a.id, 'presence', 'offline', 'reason', '', 'load_total', 0,
             'last_activity', now, 'last_offer', 0, 'no_answer', 0, 'created_at', now)
end
redis.call('HSET', key, 'name', a.name or '', 'skills', a.skills, 'cap_total', a.capacity_total,
           'softphone', a.softphone or '', 'branch', a.branch or '', 'updated_at', now)
for _, ch in ipairs({'voice', 'email', 'fax', 'branch', 'webchat'}) do
  redis.call('HSET', key, 'cap:' .. ch, a.capacity[ch] or 0, 'wrap:' .. ch, a.wrapup[ch] or 0)
  if not old then redis.call('HSET', key, 'load:' .. ch, 0) end
end
redis.call('DEL', key .. ':queues')
for _, q in ipairs(a.queues) do redis.call('SADD', key .. ':queues', q) end
if a.pools then
  redis.call('SET', key .. ':pools', table.concat(a.pools, '\n'))
else
  agent_pools_build(a.id)
end
redis.call('ZADD', B .. 'agents', 0, a.id)
local fresh = agent_get(a.id)
-- every entry was removed above (or there were none): only where it is free now
agent_reindex(a.id, fresh, nil, {score = {}})
local offers = route_agent(a.id, now)
return {a.id, offers}
