-- work.lua: what happens to an interaction after the offer. ARGV[1] interaction,
-- ARGV[2] wrapup|complete|transfer|abandon|cancel, ARGV[3] token sha ('' = admin),
-- ARGV[4] JSON arguments ({disposition, note} | {queue, agent, note} | {reason}).
local ix_id, op, sha = ARGV[1], ARGV[2], ARGV[3]
local args = cjson.decode(ARGV[4])
local now = now_ms()
local ikey = B .. 'ix:' .. ix_id
local ix = hash_to_table(redis.call('HGETALL', ikey))
if not ix.id then return fail('ERR_NOT_FOUND', 'no interaction ' .. ix_id) end

local function holder_check()
  return agent_authorised(ix.agent or '', sha)
end

local function clear_deadlines()
  redis.call('ZREM', B .. 'deadlines', 'ovf:' .. ix_id, 'maxw:' .. ix_id, 'wrap:' .. ix_id, 'excl:' .. ix_id)
end

-- release whatever the interaction holds (a place in a queue, an offer, an agent); the
-- freed agent's index entries are brought up to date by finish()'s route_agent
local function let_go()
  local freed, stale, was, _
  if ix.state == 'queued' then
    ix_dequeue(ix_id, ix)
  elseif ix.state == 'offered' then
    redis.call('DEL', B .. 'resv:' .. ix.reservation)
    redis.call('ZREM', B .. 'deadlines', 'resv:' .. ix.reservation)
    emit(now, 'offer.withdrawn', ix.agent, {reservation = ix.reservation, interaction = ix_id, agent = ix.agent})
    _, stale, was = agent_release(ix.agent, ix.channel, now, true)
    freed = ix.agent
  elseif ix.state == 'assigned' or ix.state == 'wrapup' then
    _, stale, was = agent_release(ix.agent, ix.channel, now, true)
    freed = ix.agent
  end
  clear_deadlines()
  redis.call('HDEL', ikey, 'reservation')
  return freed, stale, was
end

local function finish(state, etype, fields)
  if state == 'completed' and ix.agent then
    -- sticky routing counts from the end of the last contact, not its start
    redis.call('HSET', B .. 'case:' .. ix.case_id, 'last_agent', ix.agent, 'last_agent_at', now)
  end
  local freed, stale, was = let_go()
  redis.call('HSET', ikey, 'state', state, 'ended_at', now)
  local h = {'type', etype, 'interaction', ix_id}
  for i = 1, #fields do h[#h + 1] = fields[i] end
  history_add(ix.case_id, now, h)
  emit(now, etype, freed or ix.agent, {interaction = ix_id, case = ix.case_id, state = state, agent = ix.agent})
  if freed then route_agent(freed, now, stale, was) end
end

if op == 'wrapup' then
  if ix.state ~= 'assigned' then return fail('ERR_CONFLICT', ix_id .. ' is ' .. ix.state .. ', not assigned') end
  if not holder_check() then return fail('ERR_FORBIDDEN', 'not your interaction') end
  local secs = tonumber(redis.call('HGET', B .. 'agent:' .. ix.agent, 'wrap:' .. ix.channel)) or 0
  redis.call('HSET', ikey, 'state', 'wrapup', 'wrapup_at', now, 'disposition', args.disposition or '')
  local handle = now - tonumber(ix.assigned_at or now)
  qstat(ix.queue, now, 'handled')
  qstat(ix.queue, now, 'handle_sum_ms', handle)
  rollup(ix, now, {handled = 1, handle_ms = handle}, ix.agent)
  history_add(ix.case_id, now, {'type', 'interaction.wrapup', 'interaction', ix_id, 'agent', ix.agent,
                                'disposition', args.disposition or '', 'note', args.note or ''})
  if secs <= 0 then
    ix.state = 'wrapup'
    finish('completed', 'interaction.completed', {'agent', ix.agent})
    return {ix_id, 'completed'}
  end
  deadline_add(now + secs * 1000, 'wrap:' .. ix_id)
  emit(now, 'interaction.wrapup', ix.agent, {interaction = ix_id, agent = ix.agent, until_ms = now + secs * 1000})
  return {ix_id, 'wrapup'}
elseif op == 'complete' then
  if ix.state ~= 'assigned' and ix.state ~= 'wrapup' then
    return fail('ERR_CONFLICT', ix_id .. ' is ' .. ix.state .. ', not assigned or in wrap-up')
  end
  if not holder_check() then return fail('ERR_FORBIDDEN', 'not your interaction') end
  if ix.state == 'assigned' then
    qstat(ix.queue, now, 'handled')
    qstat(ix.queue, now, 'handle_sum_ms', now - tonumber(ix.assigned_at or now))
    rollup(ix, now, {handled = 1, handle_ms = now - tonumber(ix.assigned_at or now)}, ix.agent)
  else rollup(ix, now, {wrap_ms = now - tonumber(ix.wrapup_at or now)}, ix.agent)
  end
  finish('completed', 'interaction.completed', {'agent', ix.agent or '', 'note', args.note or ''})
  return {ix_id, 'completed'}
elseif op == 'transfer' then
  if ix.state ~= 'assigned' then return fail('ERR_CONFLICT', ix_id .. ' is ' .. ix.state .. ', not assigned') end
  if not holder_check() then return fail('ERR_FORBIDDEN', 'not your interaction') end
  local from_agent = ix.agent
  local target_agent
  if args.agent then
    target_agent = agent_get(args.agent)
    if not target_agent then return fail('ERR_NOT_FOUND', 'agent: no agent ' .. args.agent) end
    if args.agent == from_agent or not agent_free_for(target_agent, ix.channel) then
      return fail('ERR_CONFLICT', 'agent: ' .. args.agent .. ' is not available for ' .. ix.channel)
    end
  else
    local qc = qconf(args.queue)
    if not qc then return fail('ERR_NOT_FOUND', 'queue: no queue ' .. args.queue) end
    local serves = false
    for _, ch in ipairs(qc.chanlist) do serves = serves or ch == ix.channel end
    if not serves then return fail('ERR_INVALID', 'queue: ' .. args.queue .. ' does not serve ' .. ix.channel) end
  end
  agent_release(from_agent, ix.channel, now)
  qstat(ix.queue, now, 'transferred')
  rollup_transfer(ix, now, from_agent)
  history_add(ix.case_id, now, {'type', 'interaction.transferred', 'interaction', ix_id, 'agent', from_agent,
                                'to_queue', args.queue or '', 'to_agent', args.agent or '', 'note', args.note or ''})
  emit(now, 'interaction.transferred', from_agent, {interaction = ix_id, agent = from_agent,
                                                   to_queue = args.queue, to_agent = args.agent})
  redis.call('HSET', ikey, 'state', 'queued')
  redis.call('HDEL', ikey, 'agent', 'overflowed_from')
  ix.state = 'queued'
  ix.agent = nil
  ix.overflowed_from = nil
  local resv = ''
  if target_agent then
    resv = reserve(ix_id, ix, args.agent, target_agent, now)
  else
    redis.call('HSET', ikey, 'queue', args.queue, 'home_queue', args.queue, 'wait_start', now)
    ix.queue, ix.home_queue, ix.wait_start = args.queue, args.queue, now
    local block = rconf('reject_block', 300)
    if block > 0 then
      redis.call('HSET', ikey .. ':excl', from_agent, now + block * 1000)
      redis.call('EXPIRE', ikey .. ':excl', block + 60)
      deadline_add(now + block * 1000, 'excl:' .. ix_id, 'LT')
    end
    ix_enqueue(ix_id, ix, now)
    route_agent(from_agent, now)
    resv = route_interaction(ix_id, now) or ''
    return {ix_id, resv}
  end
  route_agent(from_agent, now)
  return {ix_id, resv}
elseif op == 'abandon' then
  if ix.state ~= 'queued' and ix.state ~= 'offered' then
    return fail('ERR_CONFLICT', ix_id .. ' is ' .. ix.state .. ': only waiting or offered work can be abandoned')
  end
  qstat(ix.queue, now, 'abandoned')
  if not ix.assigned_at then rollup(ix, now, {abandoned = 1}, nil) end
  finish('abandoned', 'interaction.abandoned', {'reason', args.reason or ''})
  return {ix_id, 'abandoned'}
elseif op == 'cancel' then
  if ix.state == 'completed' or ix.state == 'abandoned' or ix.state == 'canceled' then
    return fail('ERR_CONFLICT', ix_id .. ' already ended (' .. ix.state .. ')')
  end
  finish('canceled', 'interaction.canceled', {'reason', args.reason or ''})
  return {ix_id, 'canceled'}
end
return fail('ERR_INVALID', 'unknown operation')
