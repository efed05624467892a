-- agent_delete.lua: ARGV[1] agent id. Refused while the agent holds work.
local aid = ARGV[1]
local a = agent_get(aid)
if not a then return fail('ERR_NOT_FOUND', 'no agent ' .. aid) end
if (tonumber(a.load_total) or 0) > 0 then
  return fail('ERR_CONFLICT', 'agent ' .. aid .. ' holds offers or work; finish or transfer it first')
end
agent_reindex(aid, nil, agent_activity(a))
for _, sha in ipairs(redis.call('SMEMBERS', B .. 'agent:' .. aid .. ':tokens')) do
  redis.call('DEL', B .. 'token:' .. sha)
end
redis.call('DEL', B .. 'agent:' .. aid, B .. 'agent:' .. aid .. ':queues',
           B .. 'agent:' .. aid .. ':pools', B .. 'agent:' .. aid .. ':tokens')
redis.call('ZREM', B .. 'agents', aid)
emit(now_ms(), 'agent.deleted', nil, {agent = aid})
return {aid}
