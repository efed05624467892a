-- agent_state.lua: ARGV[1] agent, ARGV[2] offline|available|away, ARGV[3] reason,
-- ARGV[4] token sha ('' = admin). Becoming available is a routing trigger.
local aid, presence, reason = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local a = agent_get(aid)
if not a then return fail('ERR_NOT_FOUND', 'no agent ' .. aid) end
if not agent_authorised(aid, ARGV[4]) then return fail('ERR_FORBIDDEN', 'not your agent state') end
local offers, stale, was = 0, nil, nil
if a.presence ~= presence or a.reason ~= reason then
  -- becoming available: the index entries are written once, by route_agent below
  stale, was = agent_set_presence(aid, a, presence, reason, now, presence == 'available')
end
if presence == 'available' then offers = route_agent(aid, now, stale, was) end
return {presence, offers}
