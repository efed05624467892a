-- sweep.lua: deadlines that came due (reservation expiry, overflow, max_wait, end of
-- wrap-up, end of a reject block), at most ARGV[1] of them, oldest first. Safe to run on
-- every instance at once: each entry is removed before it is acted on.
-- Returns {processed, next_due_ms or -1, 1 while agents of an older data set are still being
-- put in their routing pools (then the daemon sweeps again at once), else 0}.
local POOL_MIGRATE_BATCH = 20
local max = tonumber(ARGV[1])
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', B .. 'deadlines', '-inf', now, 'LIMIT', 0, max)
for _, m in ipairs(due) do
  redis.call('ZREM', B .. 'deadlines', m)
  local kind, id = string.match(m, '^(%a+):(.+)$')
  if kind == 'resv' then
    reservation_end(id, now, 'timeout')
  else
    local ikey = B .. 'ix:' .. id
    local ix = hash_to_table(redis.call('HGETALL', ikey))
    if kind == 'ovf' and ix.state == 'queued' and not ix.overflowed_from then
      local home = qconf(ix.home_queue or ix.queue)
      local target = home and home.overflow_target
      if target and target ~= '' and qconf(target) then
        ix_dequeue(id, ix)
        redis.call('HSET', ikey, 'queue', target, 'overflowed_from', ix.queue)
        history_add(ix.case_id, now, {'type', 'interaction.overflowed', 'interaction', id,
                                      'from_queue', ix.queue, 'to_queue', target})
        emit(now, 'interaction.overflowed', nil, {interaction = id, from_queue = ix.queue, to_queue = target})
        ix.overflowed_from = ix.queue
        ix.queue = target
        wait_add(id, ix)
        redis.call('ZADD', B .. 'q:' .. ix.queue .. ':age', tonumber(ix.created_at), id)
        route_interaction(id, now)
      end
    elseif kind == 'maxw' and ix.state == 'queued' then
      local home = qconf(ix.home_queue or ix.queue)
      local action = home and home.on_max_wait or 'close'
      if action == 'close' then rollup(ix, now, {timed_out = 1}, nil) end -- before its history entry
      history_add(ix.case_id, now, {'type', 'interaction.max_wait', 'interaction', id, 'action', action})
      emit(now, 'interaction.max_wait', nil, {interaction = id, queue = ix.queue, action = action,
                                             channel = ix.channel})
      redis.call('HSET', ikey, 'max_wait_reached', now)
      if action == 'close' then
        ix_dequeue(id, ix)
        redis.call('ZREM', B .. 'deadlines', 'ovf:' .. id)
        redis.call('HSET', ikey, 'state', 'canceled', 'ended_at', now, 'end_reason', 'max_wait')
        qstat(ix.queue, now, 'timed_out')
      end
    elseif kind == 'wrap' and ix.state == 'wrapup' then
      redis.call('HSET', ikey, 'state', 'completed', 'ended_at', now)
      redis.call('HSET', B .. 'case:' .. ix.case_id, 'last_agent', ix.agent, 'last_agent_at', now)
      rollup(ix, now, {wrap_ms = now - tonumber(ix.wrapup_at or now)}, ix.agent)
      local _, stale, was = agent_release(ix.agent, ix.channel, now, true)
      history_add(ix.case_id, now, {'type', 'interaction.completed', 'interaction', id, 'agent', ix.agent})
      emit(now, 'interaction.completed', ix.agent, {interaction = id, agent = ix.agent, case = ix.case_id})
      route_agent(ix.agent, now, stale, was)
    elseif kind == 'excl' and (ix.state == 'queued' or ix.state == 'offered') then
      if ix.state == 'queued' then route_interaction(id, now) end
      -- the next block of this interaction to end (one per agent that let it go)
      local ex, nxt = redis.call('HGETALL', ikey .. ':excl'), nil
      for i = 2, #ex, 2 do
        local u = tonumber(ex[i])
        if u > now and (not nxt or u < nxt) then nxt = u end
      end
      if nxt then deadline_add(nxt, 'excl:' .. id) end
    end
  end
end

-- Agents saved by an omniccd from before routing pools (a data set of an older version)
-- are in no pool's index: a few of them per sweep are put in theirs, and those available
-- offered waiting work, so nobody waits for their next change to be routed again. Walks
-- the agents in id order; when all are done, pools:migrated ends the walk for good (one
-- EXISTS per sweep from then on).
local more = 0
if redis.call('EXISTS', B .. 'pools:migrated') == 0 then
  local from = redis.call('GET', B .. 'pools:migrate_from')
  local ids = redis.call('ZRANGEBYLEX', B .. 'agents', from and ('(' .. from) or '-', '+',
                         'LIMIT', 0, POOL_MIGRATE_BATCH)
  for _, aid in ipairs(ids) do
    if redis.call('EXISTS', B .. 'agent:' .. aid .. ':pools') == 0 then
      local a = agent_get(aid)
      if a then
        agent_reindex(aid, a, agent_activity(a))
        if a.presence == 'available' then route_agent(aid, now) end
      end
    end
  end
  if #ids < POOL_MIGRATE_BATCH then
    redis.call('SET', B .. 'pools:migrated', now)
    redis.call('DEL', B .. 'pools:migrate_from')
  else
    redis.call('SET', B .. 'pools:migrate_from', ids[#ids])
    more = 1
  end
end

local nxt = redis.call('ZRANGE', B .. 'deadlines', 0, 0, 'WITHSCORES')
return {#due, nxt[2] and tonumber(nxt[2]) or -1, more}
