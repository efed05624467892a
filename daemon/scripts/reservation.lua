-- reservation.lua: ARGV[1] reservation, ARGV[2] accept|reject, ARGV[3] token sha ('' =
-- admin), ARGV[4] reason. Accept assigns the interaction; reject puts it back in its place
-- and offers it to the next agent (the rejecting agent is skipped for reject_block).
local resv, op, sha = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local r = hash_to_table(redis.call('HGETALL', B .. 'resv:' .. resv))
if not r.id then return fail('ERR_NOT_FOUND', 'no open reservation ' .. resv .. ' (ended or expired)') end
if not agent_authorised(r.agent, sha) then return fail('ERR_FORBIDDEN', 'reservation belongs to another agent') end
if op == 'reject' then
  reservation_end(resv, now, 'rejected')
  return {r.interaction, 'queued'}
end
if tonumber(r.expires_at) < now then
  reservation_end(resv, now, 'timeout')
  return fail('ERR_CONFLICT', 'reservation ' .. resv .. ' expired')
end
redis.call('DEL', B .. 'resv:' .. resv)
redis.call('ZREM', B .. 'deadlines', 'resv:' .. resv, 'ovf:' .. r.interaction, 'maxw:' .. r.interaction)
local ikey = B .. 'ix:' .. r.interaction
local ix = hash_to_table(redis.call('HGETALL', ikey))
redis.call('HSET', ikey, 'state', 'assigned', 'assigned_at', now, 'agent', r.agent)
redis.call('HDEL', ikey, 'reservation')
redis.call('HSET', B .. 'agent:' .. r.agent, 'no_answer', 0)
redis.call('HSET', B .. 'case:' .. ix.case_id, 'last_agent', r.agent, 'last_agent_at', now)
local wait = now - tonumber(ix.created_at)
local qc = qconf(ix.home_queue or ix.queue)
rollup_accept(ix, now, r.agent)
qstat(ix.queue, now, 'accepted')
qstat(ix.queue, now, 'wait_sum_ms', wait)
if qc and wait <= (tonumber(qc.sla_seconds) or 20) * 1000 then qstat(ix.queue, now, 'in_sla') end
history_add(ix.case_id, now, {'type', 'offer.accepted', 'interaction', r.interaction,
                              'agent', r.agent, 'reservation', resv, 'wait_ms', tostring(wait)})
emit(now, 'offer.accepted', r.agent, {reservation = resv, interaction = r.interaction,
                                      agent = r.agent, case = ix.case_id, wait_ms = wait})
return {r.interaction, 'assigned'}
