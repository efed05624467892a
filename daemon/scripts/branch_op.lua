-- branch_op.lua: one request of a branch terminal (channels/branch_ops.c), atomically.
-- ARGV[1] op, ARGV[2] terminal id, ARGV[3] branch id (from the terminal's certificate),
-- ARGV[4] msg_id ('' for requests that are not stored), ARGV[5] agent, ARGV[6] sha256 of the
-- agent's token, ARGV[7] arguments (JSON, validated and normalised by the daemon),
-- ARGV[8] seconds a result is kept for resends.
-- Returns {replayed 0|1, result JSON}. A msg_id seen before returns the stored result and
-- changes nothing; the result is stored in this same call as the operation, so a request is
-- either done and remembered, or not done at all. Refusals (ERR_*) happen before any write
-- and are not stored.
local op, T, BR, MSG, AID, SHA = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local args = cjson.decode(ARGV[7])
local ttl = tonumber(ARGV[8]) or 1209600
local now = now_ms()
local TK = B .. 'bterm:' .. T
local BK = B .. 'branch:' .. BR
local OUTBOX_MAX = 5000
local TERM_TTL = 30 * 86400

-- A frame's result is kept under its msg_id as "op\nresult JSON" (the JSON as first sent, so a
-- replay answers the very same text); an older entry is the JSON {op, result}.
local function stored_result(text)
  local sop, json = string.match(text, '^([%w_]+)\n(.*)$')
  if sop then return sop, json end
  local p = cjson.decode(text)
  return p.op, cjson.encode(p.result)
end

if MSG ~= '' then
  local prev = redis.call('GET', TK .. ':msg:' .. MSG)
  if prev then
    local used_for, json = stored_result(prev)
    if used_for ~= op then return fail('ERR_CONFLICT', 'msg_id ' .. MSG .. ' was already used for ' .. used_for) end
    return {1, json}
  end
end

local function day() return math.floor(now / 86400000) end

-- branch counters: since the start, and per UTC day (kept 40 days)
local function bstat(field, by)
  local dk = BK .. ':day:' .. day()
  redis.call('HINCRBY', dk, field, by or 1)
  redis.call('EXPIRE', dk, 40 * 86400)
  redis.call('HINCRBY', BK .. ':totals', field, by or 1)
end

-- one event into a terminal's outbox: a per-terminal sequence number is the stream id, so a
-- terminal resumes from the last number it saw
local function term_push(t, etype, data)
  local tk = B .. 'bterm:' .. t
  local seq = redis.call('INCR', tk .. ':seq')
  redis.call('XADD', tk .. ':out', 'MAXLEN', '~', OUTBOX_MAX, seq .. '-0', 'at', tostring(now),
             'event', etype, 'data', cjson.encode(data))
  redis.call('EXPIRE', tk .. ':out', TERM_TTL)
  redis.call('EXPIRE', tk .. ':seq', TERM_TTL)
  return seq
end

-- an event for every terminal of the branch (counter displays, the other tellers), and on
-- the global stream so that every daemon holding one of them delivers it
local function branch_event(etype, data)
  data.branch = BR
  for _, t in ipairs(redis.call('SMEMBERS', BK .. ':terminals')) do term_push(t, etype, data) end
  emit(now, 'branch.' .. etype, nil, data)
end

local function branch_conf()
  local b = hash_to_table(redis.call('HGETALL', BK))
  if not b.id then return nil end
  b.services = cjson.decode(b.services or '{}')
  b.counters = tonumber(b.counters) or 1
  return b
end

-- the teller: the token belongs to the agent, and the agent works at this branch
local function teller()
  if AID == '' then return nil, 'ERR_FORBIDDEN sign in first' end
  if SHA == '' or redis.call('GET', B .. 'token:' .. SHA) ~= AID then
    return nil, 'ERR_FORBIDDEN the token does not belong to agent ' .. AID .. ' (revoked?)'
  end
  local a = agent_get(AID)
  if not a then return nil, 'ERR_FORBIDDEN no agent ' .. AID end
  if (a.branch or '') ~= BR then
    return nil, 'ERR_FORBIDDEN agent ' .. AID .. ' does not work at branch ' .. BR
  end
  return a
end

-- customers this terminal may read and write about without a new lookup: looked up here, or
-- with a visit here, within the last 12 hours
local function seen(cust)
  if cust and cust ~= '' then redis.call('SET', TK .. ':seen:' .. cust, '1', 'EX', 43200) end
end

local function visit_id_of(a)
  if a.visit then return a.visit end
  if a.visit_ref then
    local prev = redis.call('GET', TK .. ':msg:' .. a.visit_ref)
    if not prev then return nil end
    local _, json = stored_result(prev)
    local res = cjson.decode(json)
    return type(res) == 'table' and res.visit or nil
  end
  return nil
end

local function visit_get(a)
  local id = visit_id_of(a)
  if not id then return nil, 'ERR_NOT_FOUND visit_ref: no visit was created by msg_id ' .. tostring(a.visit_ref) end
  local ix = hash_to_table(redis.call('HGETALL', B .. 'ix:' .. id))
  if not ix.id then return nil, 'ERR_NOT_FOUND no visit ' .. id end
  if ix.branch ~= BR then return nil, 'ERR_FORBIDDEN ' .. id .. ' is not a visit of branch ' .. BR end
  return ix
end

-- the case a request is about: its visit's, or an explicit one this terminal has seen
local function case_of(a)
  if a.visit or a.visit_ref then
    local ix, e = visit_get(a)
    if not ix then return nil, e end
    return ix.case_id, nil, ix
  end
  local c = redis.call('HMGET', B .. 'case:' .. a.case, 'customer_id', 'status')
  if not c[1] then return nil, 'ERR_NOT_FOUND no case ' .. a.case end
  if redis.call('EXISTS', TK .. ':seen:' .. resolve_customer(c[1])) == 0 then
    return nil, 'ERR_FORBIDDEN look the customer up (with a purpose) before acting on ' .. a.case
  end
  return a.case
end

local function mine(ix)
  return ix.state == 'assigned' and ix.agent == AID
end

local function visit_view(id, ix)
  return {visit = id, ticket = ix.ticket, service = ix.service, state = ix.visit_state,
          case_id = ix.case_id, customer_id = ix.customer_id, counter = ix.counter,
          created_at = tonumber(ix.created_at), interaction_state = ix.state}
end

local function agent_take(a)
  local old = agent_activity(a)
  a['load:branch'] = (tonumber(a['load:branch']) or 0) + 1
  a.load_total = (tonumber(a.load_total) or 0) + 1
  a.last_activity = now
  redis.call('HSET', B .. 'agent:' .. AID, 'load:branch', a['load:branch'], 'load_total', a.load_total,
             'last_activity', now)
  agent_reindex(AID, a, old)
end

local function has_capacity(a)
  return (tonumber(a['load:branch']) or 0) < (tonumber(a['cap:branch']) or 0) and
         (tonumber(a.load_total) or 0) < (tonumber(a.cap_total) or 0)
end

-- the teller takes a visit at a counter: as an accepted offer, without the offer
local function claim(id, ix, a, counter, how)
  if ix.state == 'queued' then ix_dequeue(id, ix) end
  if ix.state == 'offered' and ix.reservation then
    -- offered by the router meanwhile: withdrawn, the teller at the counter has the customer
    redis.call('DEL', B .. 'resv:' .. ix.reservation)
    redis.call('ZREM', B .. 'deadlines', 'resv:' .. ix.reservation)
    emit(now, 'offer.withdrawn', ix.agent, {reservation = ix.reservation, interaction = id, agent = ix.agent})
    agent_release(ix.agent, ix.channel, now)
    route_agent(ix.agent, now)
  end
  redis.call('ZREM', BK .. ':waiting', id)
  redis.call('ZREM', BK .. ':parked', id)
  redis.call('ZREM', B .. 'deadlines', 'ovf:' .. id, 'maxw:' .. id, 'excl:' .. id)
  local first = not ix.called_at
  redis.call('HSET', B .. 'ix:' .. id, 'state', 'assigned', 'agent', AID, 'counter', counter or '',
             'visit_state', 'called', 'called_at', now, 'assigned_at', ix.assigned_at or now)
  redis.call('HDEL', B .. 'ix:' .. id, 'reservation', 'parked_by')
  ix.state, ix.agent, ix.counter, ix.visit_state = 'assigned', AID, counter or '', 'called'
  agent_take(a)
  redis.call('HSET', B .. 'case:' .. ix.case_id, 'last_agent', AID, 'last_agent_at', now)
  local wait = now - tonumber(ix.created_at)
  if first then
    qstat(ix.queue, now, 'offered')
    qstat(ix.queue, now, 'accepted')
    qstat(ix.queue, now, 'wait_sum_ms', wait)
    local qc = qconf(ix.home_queue or ix.queue)
    if qc and wait <= (tonumber(qc.sla_seconds) or 20) * 1000 then qstat(ix.queue, now, 'in_sla') end
    bstat('called')
    bstat('wait_sum_ms', wait)
  end
  history_add(ix.case_id, now, {'type', 'visit.called', 'interaction', id, 'agent', AID, 'branch', BR,
                                'counter', counter or '', 'ticket', ix.ticket or '', 'how', how,
                                'wait_ms', tostring(wait)})
  branch_event('visit.called', {visit = id, ticket = ix.ticket, counter = counter or '', agent = AID,
                                service = ix.service})
  seen(ix.customer_id)
  return wait
end

-- the teller lets go of a visit it holds (end, no-show, park, transfer)
local function release_visit(id, ix)
  if ix.state == 'assigned' and ix.agent == AID then
    agent_release(AID, 'branch', now)
    return true
  end
  return false
end

local function visit_finish(id, ix, state, outcome, note, counter_field)
  local held = ix.state == 'assigned'
  release_visit(id, ix)
  redis.call('ZREM', BK .. ':waiting', id)
  redis.call('ZREM', BK .. ':parked', id)
  redis.call('ZREM', B .. 'deadlines', 'ovf:' .. id, 'maxw:' .. id, 'wrap:' .. id, 'excl:' .. id)
  redis.call('HSET', B .. 'ix:' .. id, 'state', state, 'ended_at', now, 'visit_state', 'ended',
             'outcome', outcome)
  if held and state == 'completed' then
    qstat(ix.queue, now, 'handled')
    qstat(ix.queue, now, 'handle_sum_ms', now - tonumber(ix.assigned_at or now))
  elseif state == 'abandoned' then
    qstat(ix.queue, now, 'abandoned')
  end
  bstat(counter_field)
  if ix.called_at and state == 'completed' then bstat('serve_sum_ms', now - tonumber(ix.called_at)) end
  history_add(ix.case_id, now, {'type', 'visit.ended', 'interaction', id, 'agent', AID, 'branch', BR,
                                'outcome', outcome, 'note', note or ''})
  emit(now, state == 'completed' and 'interaction.completed' or 'interaction.abandoned', AID,
       {interaction = id, case = ix.case_id, state = state, agent = AID})
  branch_event('visit.ended', {visit = id, ticket = ix.ticket, outcome = outcome, agent = AID})
  route_agent(AID, now)
end

local ops = {}

ops.hello = function()
  local b = branch_conf()
  if not b then return 'ERR_NOT_FOUND branch ' .. BR .. ' is not registered (config or POST /v1/branches)' end
  redis.call('SADD', BK .. ':terminals', T)
  redis.call('HSET', TK, 'branch', BR, 'hello_at', now)
  redis.call('EXPIRE', TK, TERM_TTL)
  local seq = tonumber(redis.call('GET', TK .. ':seq') or '0')
  local first = redis.call('XRANGE', TK .. ':out', '-', '+', 'COUNT', 1)
  local oldest = first[1] and tonumber(string.match(first[1][1], '^(%d+)')) or seq + 1
  return {branch = {id = BR, name = b.name, bank = b.bank, region = b.region,
                    services = b.services, counters = b.counters},
          seq = seq, oldest = oldest}
end

ops.signin = function()
  local a, e = teller()
  if not a then return e end
  redis.call('HSET', TK .. ':agents', AID, now)
  redis.call('EXPIRE', TK .. ':agents', TERM_TTL)
  -- what the agent's own stream holds since the terminal last relayed it (offers made while
  -- the link was down), bounded to the last five minutes
  local mark = redis.call('HGET', TK .. ':arelay', AID)
  local start = '(' .. (mark or tostring(now - 300000))
  local n = 0
  for _, e2 in ipairs(redis.call('XRANGE', B .. 'agent:' .. AID .. ':events', start, '+', 'COUNT', 200)) do
    local f = hash_to_table(e2[2])
    if f.type and string.sub(f.type, 1, 7) ~= 'branch.' then
      term_push(T, f.type, cjson.decode(f.data or '{}'))
      n = n + 1
    end
    redis.call('HSET', TK .. ':arelay', AID, e2[1])
  end
  if not mark then
    local top = redis.call('XREVRANGE', B .. 'agent:' .. AID .. ':events', '+', '-', 'COUNT', 1)
    redis.call('HSET', TK .. ':arelay', AID, top[1] and top[1][1] or (now .. '-0'))
  end
  redis.call('EXPIRE', TK .. ':arelay', TERM_TTL)
  return {agent = {id = AID, name = a.name, presence = a.presence, skills = cjson.decode(a.skills or '{}'),
                   capacity = tonumber(a['cap:branch']) or 0, load = tonumber(a['load:branch']) or 0,
                   queues = redis.call('SMEMBERS', B .. 'agent:' .. AID .. ':queues')},
          caught_up = n}
end

-- relay: events of the global stream that concern tellers signed in at terminals of this
-- daemon, into those terminals' outboxes, once each (the agent's last relayed id is kept).
-- args {terms = {T = {{agent, id, type, data}, ...}}} -> terminals with new events
ops.relay = function()
  local out = {}
  local function newer(a, b)
    local am, as = string.match(a, '^(%d+)-(%d+)$')
    local bm, bs = string.match(b, '^(%d+)-(%d+)$')
    if not am or not bm then return true end
    am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
    return am > bm or (am == bm and as > bs)
  end
  for t, items in pairs(args.terms or {}) do
    local tk = B .. 'bterm:' .. t
    local pushed = false
    for _, it in ipairs(items) do
      local mark = redis.call('HGET', tk .. ':arelay', it[1])
      if not mark or newer(it[2], mark) then
        term_push(t, it[3], cjson.decode(it[4]))
        redis.call('HSET', tk .. ':arelay', it[1], it[2])
        pushed = true
      end
    end
    if pushed then out[#out + 1] = t end
  end
  return {terminals = out}
end

ops.visit_register = function()
  local a, e = teller()
  if not a then return e end
  local b = branch_conf()
  if not b then return 'ERR_NOT_FOUND branch ' .. BR .. ' is not registered' end
  local id = args.visit
  local ix = hash_to_table(redis.call('HGETALL', B .. 'ix:' .. id))
  if not ix.id then return 'ERR_NOT_FOUND no interaction ' .. id end
  if ix.branch and ix.branch ~= BR then return 'ERR_FORBIDDEN ' .. id .. ' is a visit of another branch' end
  if not ix.ticket then
    local letter = string.upper(string.sub(args.service, 1, 1))
    local tk = BK .. ':tickets:' .. day() .. ':' .. letter
    local n = redis.call('INCR', tk)
    redis.call('EXPIRE', tk, 2 * 86400)
    ix.ticket = letter .. string.format('%03d', n)
    redis.call('HSET', B .. 'ix:' .. id, 'branch', BR, 'service', args.service, 'ticket', ix.ticket,
               'terminal', T, 'created_by', AID, 'visit_state', 'waiting')
    if args.captured_at then redis.call('HSET', B .. 'ix:' .. id, 'captured_at', args.captured_at) end
    ix.branch, ix.service, ix.visit_state = BR, args.service, 'waiting'
    if ix.state == 'queued' then redis.call('ZADD', BK .. ':waiting', tonumber(ix.created_at), id) end
    bstat('visits')
    history_add(ix.case_id, now, {'type', 'visit.created', 'interaction', id, 'branch', BR,
                                  'service', args.service, 'ticket', ix.ticket, 'agent', AID,
                                  'terminal', T, 'captured_at', tostring(args.captured_at or '')})
    branch_event('visit.created', {visit = id, ticket = ix.ticket, service = args.service})
  end
  seen(ix.customer_id)
  -- served at once when the teller can; else the walk-in waits like any other (the visit is
  -- registered either way: it must not be left in a queue without its branch)
  local refused
  if args.serve_now and not (ix.state == 'assigned' and ix.agent == AID) then
    if not has_capacity(a) then
      refused = 'busy: end or park your current visit first; the customer is waiting'
    elseif ix.state ~= 'queued' and ix.state ~= 'offered' then
      refused = id .. ' is ' .. ix.state .. ' already'
    else
      claim(id, ix, a, args.counter, 'walk-in')
    end
  end
  local v = visit_view(id, ix)
  v.duplicate_ingest = args.duplicate or false
  if refused then v.serve_now_refused = refused end
  return v
end

ops.call_next = function()
  local a, e = teller()
  if not a then return e end
  if not has_capacity(a) then return 'ERR_BUSY end or park your current visit first (branch capacity ' ..
    (a['cap:branch'] or 0) .. ')' end
  local b = branch_conf()
  if not b then return 'ERR_NOT_FOUND branch ' .. BR .. ' is not registered' end
  local best, best_score
  for svc, q in pairs(b.services) do
    if (not args.service or args.service == svc) and
       redis.call('SISMEMBER', B .. 'agent:' .. AID .. ':queues', q) == 1 then
      local cands = redis.call('ZRANGE', B .. 'q:' .. q .. ':wait:branch', 0, CHANNEL_SCAN - 1, 'WITHSCORES')
      for i = 1, #cands, 2 do
        local s = tonumber(cands[i + 1])
        if best_score and s >= best_score then break end
        if redis.call('HGET', B .. 'ix:' .. cands[i], 'branch') == BR and not excluded(cands[i], AID, now) then
          best, best_score = cands[i], s
          break
        end
      end
    end
  end
  if not best then return 'ERR_EMPTY nobody is waiting for the services you serve' end
  local ix = hash_to_table(redis.call('HGETALL', B .. 'ix:' .. best))
  local wait = claim(best, ix, a, args.counter, 'call-next')
  local pop = screen_pop(best, ix)
  pop.visit = visit_view(best, ix)
  pop.wait_ms = wait
  return pop
end

ops.serve = function()
  local _, eteller = teller()
  if eteller then return eteller end
  local ix, e = visit_get(args)
  if not ix then return e end
  if not mine(ix) then return 'ERR_CONFLICT ' .. ix.id .. ' is not called to your counter' end
  redis.call('HSET', B .. 'ix:' .. ix.id, 'visit_state', 'serving', 'served_at', now)
  history_add(ix.case_id, now, {'type', 'visit.serving', 'interaction', ix.id, 'agent', AID, 'branch', BR})
  branch_event('visit.serving', {visit = ix.id, ticket = ix.ticket, counter = ix.counter, agent = AID})
  ix.visit_state = 'serving'
  return visit_view(ix.id, ix)
end

ops.recall = function()
  local a, ea = teller()
  if not a then return ea end
  local ix, e = visit_get(args)
  if not ix then return e end
  if ix.state == 'parked' then
    if ix.parked_by ~= AID then return 'ERR_CONFLICT ' .. ix.id .. ' was parked by another teller' end
    if not has_capacity(a) then return 'ERR_BUSY end or park your current visit first' end
    claim(ix.id, ix, a, args.counter or ix.counter, 'recall')
    return visit_view(ix.id, ix)
  end
  if not mine(ix) then return 'ERR_CONFLICT ' .. ix.id .. ' is not called to your counter' end
  local n = redis.call('HINCRBY', B .. 'ix:' .. ix.id, 'recalls', 1)
  history_add(ix.case_id, now, {'type', 'visit.recalled', 'interaction', ix.id, 'agent', AID, 'branch', BR})
  branch_event('visit.recalled', {visit = ix.id, ticket = ix.ticket, counter = ix.counter, agent = AID, recalls = n})
  local v = visit_view(ix.id, ix)
  v.recalls = n
  return v
end

ops.park = function()
  local _, eteller = teller()
  if eteller then return eteller end
  local ix, e = visit_get(args)
  if not ix then return e end
  if not mine(ix) then return 'ERR_CONFLICT ' .. ix.id .. ' is not at your counter' end
  release_visit(ix.id, ix)
  redis.call('HSET', B .. 'ix:' .. ix.id, 'state', 'parked', 'visit_state', 'parked', 'parked_at', now,
             'parked_by', AID)
  redis.call('ZADD', BK .. ':parked', now, ix.id)
  bstat('parked')
  history_add(ix.case_id, now, {'type', 'visit.parked', 'interaction', ix.id, 'agent', AID, 'branch', BR,
                                'reason', args.reason or ''})
  branch_event('visit.parked', {visit = ix.id, ticket = ix.ticket, agent = AID})
  route_agent(AID, now)
  ix.state, ix.visit_state = 'parked', 'parked'
  return visit_view(ix.id, ix)
end

ops.transfer = function()
  local _, eteller = teller()
  if eteller then return eteller end
  local ix, e = visit_get(args)
  if not ix then return e end
  if not mine(ix) and not (ix.state == 'parked' and ix.parked_by == AID) then
    return 'ERR_CONFLICT ' .. ix.id .. ' is not at your counter'
  end
  local b = branch_conf()
  local q = b and b.services[args.service]
  if not q then return 'ERR_INVALID service: branch ' .. BR .. ' does not offer ' .. args.service end
  release_visit(ix.id, ix)
  redis.call('ZREM', BK .. ':parked', ix.id)
  redis.call('HSET', B .. 'ix:' .. ix.id, 'state', 'queued', 'queue', q, 'home_queue', q,
             'service', args.service, 'visit_state', 'waiting')
  redis.call('HDEL', B .. 'ix:' .. ix.id, 'agent', 'counter', 'parked_by', 'overflowed_from')
  ix.state, ix.queue, ix.home_queue, ix.agent, ix.overflowed_from = 'queued', q, q, nil, nil
  ix_enqueue(ix.id, ix, now)
  redis.call('ZADD', BK .. ':waiting', tonumber(ix.created_at), ix.id)
  qstat(q, now, 'transferred')
  bstat('transfers')
  history_add(ix.case_id, now, {'type', 'visit.transferred', 'interaction', ix.id, 'agent', AID,
                                'branch', BR, 'to_service', args.service, 'note', args.note or ''})
  branch_event('visit.transferred', {visit = ix.id, ticket = ix.ticket, service = args.service})
  route_interaction(ix.id, now)
  route_agent(AID, now)
  ix.service, ix.visit_state = args.service, 'waiting'
  return visit_view(ix.id, ix)
end

ops.no_show = function()
  local _, eteller = teller()
  if eteller then return eteller end
  local ix, e = visit_get(args)
  if not ix then return e end
  if not mine(ix) then return 'ERR_CONFLICT ' .. ix.id .. ' is not called to your counter' end
  visit_finish(ix.id, ix, 'abandoned', 'no_show', '', 'no_shows')
  ix.state, ix.visit_state = 'abandoned', 'ended'
  return visit_view(ix.id, ix)
end

ops['end'] = function()
  local _, eteller = teller()
  if eteller then return eteller end
  local ix, e = visit_get(args)
  if not ix then return e end
  if not mine(ix) and not (ix.state == 'parked' and ix.parked_by == AID) then
    return 'ERR_CONFLICT ' .. ix.id .. ' is ' .. (ix.state or '?') .. ', not at your counter'
  end
  visit_finish(ix.id, ix, 'completed', args.outcome, args.note, 'served')
  ix.state, ix.visit_state = 'completed', 'ended'
  local v = visit_view(ix.id, ix)
  v.outcome = args.outcome
  return v
end

ops.note = function()
  local _, eteller = teller()
  if eteller then return eteller end
  local case_id, e, ix = case_of(args)
  if not case_id then return e end
  redis.call('HSET', B .. 'case:' .. case_id, 'updated_at', now)
  local hid = history_add(case_id, now, {'type', 'note', 'by', AID, 'branch', BR, 'terminal', T,
                                         'interaction', ix and ix.id or '', 'text', args.text})
  branch_event('case.updated', {case = case_id, history = hid, what = 'note'})
  return {case_id = case_id, history_id = hid}
end

ops.consent = function()
  local _, eteller = teller()
  if eteller then return eteller end
  local case_id, e = case_of(args)
  if not case_id then return e end
  local cust = resolve_customer(redis.call('HGET', B .. 'case:' .. case_id, 'customer_id'))
  local granted = args.granted and 'yes' or 'no'
  local hid = history_add(case_id, now, {'type', 'consent', 'kind', args.kind, 'granted', granted,
                                         'by', AID, 'branch', BR, 'terminal', T, 'text', args.text or '',
                                         'captured_at', tostring(args.captured_at or '')})
  redis.call('HSET', B .. 'cust:' .. cust .. ':consents', args.kind,
             cjson.encode({granted = args.granted, at = now, by = AID, branch = BR, case = case_id}))
  branch_event('case.updated', {case = case_id, history = hid, what = 'consent'})
  return {case_id = case_id, customer_id = cust, kind = args.kind, granted = args.granted, history_id = hid}
end

-- every lookup is written to the access log, found or not: who, when, which customer, why
ops.lookup = function()
  local _, eteller = teller()
  if eteller then return eteller end
  local cust = redis.call('GET', B .. 'idx:' .. args.kind .. ':' .. args.value)
  if cust then cust = resolve_customer(cust) end
  local fields = {'at', tostring(now), 'agent', AID, 'branch', BR, 'terminal', T, 'by', args.by,
                  'value', args.masked, 'purpose', args.purpose, 'customer', cust or '',
                  'result', cust and 'found' or 'not_found', 'msg_id', MSG}
  local id = redis.call('XADD', B .. 'access:log', '*', unpack(fields))
  redis.call('XADD', B .. 'access:agent:' .. AID, id, unpack(fields))
  redis.call('XADD', B .. 'access:branch:' .. BR, id, unpack(fields))
  if cust then redis.call('XADD', B .. 'access:cust:' .. cust, id, unpack(fields)) end
  bstat('lookups')
  if not cust then return {found = false, access_id = id} end
  seen(cust)
  local ck = B .. 'cust:' .. cust
  local p = hash_to_table(redis.call('HGETALL', ck))
  local ids = {}
  for _, m in ipairs(redis.call('SMEMBERS', ck .. ':ids')) do
    local k, v = string.match(m, '^([^:]+):(.*)$')
    if k ~= 'ext' then ids[#ids + 1] = {type = k, value = v} end
  end
  table.sort(ids, function(x, y) return x.type .. x.value < y.type .. y.value end)
  local cases, history = {}, {}
  for i, cid in ipairs(redis.call('ZREVRANGE', ck .. ':cases', 0, 9)) do
    local c = redis.call('HMGET', B .. 'case:' .. cid, 'status', 'policy', 'updated_at', 'last_channel')
    cases[#cases + 1] = {id = cid, status = c[1], policy = c[2], updated_at = tonumber(c[3]), last_channel = c[4]}
    if i <= 3 then
      for _, ev in ipairs(redis.call('XREVRANGE', B .. 'case:' .. cid .. ':hist', '+', '-', 'COUNT', 10)) do
        local h = hash_to_table(ev[2])
        history[#history + 1] = {id = ev[1], case = cid, at = tonumber(h.at), type = h.type,
                                 channel = h.channel, summary = h.summary or h.text or h.outcome or h.note,
                                 agent = h.agent or h.by, branch = h.branch}
      end
    end
  end
  table.sort(history, function(x, y) return (x.at or 0) > (y.at or 0) end)
  local consents = {}
  local cf = redis.call('HGETALL', ck .. ':consents')
  for i = 1, #cf, 2 do consents[cf[i]] = cjson.decode(cf[i + 1]) end
  return {found = true, access_id = id,
          customer = {id = cust, name = p.name, segment = p.segment or 'standard', identifiers = ids,
                      consents = consents},
          cases = cases, history = history}
end

ops.document = function()
  local _, eteller = teller()
  if eteller then return eteller end
  local case_id, e, ix = case_of(args)
  if not case_id then return e end
  local dk = B .. 'doc:' .. args.sha256
  if redis.call('EXISTS', dk) == 0 then
    redis.call('HSET', dk, 'sha256', args.sha256, 'size', args.size, 'mime', args.mime, 'first_at', now)
  end
  redis.call('SADD', B .. 'case:' .. case_id .. ':docs', args.sha256)
  local hid = history_add(case_id, now, {'type', 'document', 'sha256', args.sha256, 'size', tostring(args.size),
                                         'name', args.name, 'mime', args.mime, 'by', AID, 'branch', BR,
                                         'interaction', ix and ix.id or ''})
  bstat('documents')
  branch_event('case.updated', {case = case_id, history = hid, what = 'document'})
  return {case_id = case_id, sha256 = args.sha256, size = args.size, history_id = hid}
end

-- hand the case over to the contact centre: a new interaction on the same case, waiting in
-- the named queue with the teller's note (written here as ingest.lua writes interactions)
ops.handover = function()
  local _, eteller = teller()
  if eteller then return eteller end
  local case_id, e, vix = case_of(args)
  if not case_id then return e end
  if not qconf(args.queue) then return 'ERR_NOT_FOUND queue: no queue ' .. args.queue end
  local cust = resolve_customer(redis.call('HGET', B .. 'case:' .. case_id, 'customer_id'))
  local ext = 'handover:' .. T .. ':' .. MSG
  local ix_id = 'I-' .. redis.call('INCR', B .. 'seq:ix')
  local segment = redis.call('HGET', B .. 'cust:' .. cust, 'segment') or 'standard'
  local boost = (tonumber(args.boost) or 0) + (tonumber((args.segment_boosts or {})[segment]) or 0)
  local score = now / 1000 - boost
  local b = branch_conf()
  local subject = 'Handover from branch ' .. ((b and b.name) or BR)
  local ikey = B .. 'ix:' .. ix_id
  redis.call('HSET', ikey, 'id', ix_id, 'channel', args.channel, 'direction', 'outbound',
             'external_id', ext, 'customer_id', cust, 'case_id', case_id, 'queue', args.queue,
             'home_queue', args.queue, 'state', 'queued', 'created_at', now, 'segment', segment,
             'wait_score', score, 'subject', subject, 'body', args.note,
             'metadata', cjson.encode({branch = BR, terminal = T, agent = AID, from_visit = vix and vix.id or ''}))
  redis.call('SET', B .. 'idem:' .. args.channel .. ':' .. ext, ix_id)
  redis.call('HSET', B .. 'case:' .. case_id, 'status', 'open', 'updated_at', now)
  history_add(case_id, now, {'type', 'branch.handover', 'interaction', ix_id, 'agent', AID, 'branch', BR,
                             'queue', args.queue, 'note', args.note})
  history_add(case_id, now, {'type', 'interaction.received', 'interaction', ix_id, 'channel', args.channel,
                             'direction', 'outbound', 'from', BR, 'summary', subject})
  ix_enqueue(ix_id, {queue = args.queue, channel = args.channel, wait_score = score, created_at = now}, now)
  emit(now, 'interaction.queued', nil, {interaction = ix_id, case = case_id, customer = cust,
                                        channel = args.channel, queue = args.queue})
  local resv = route_interaction(ix_id, now) or ''
  bstat('handovers')
  if vix and (mine(vix) or (vix.state == 'parked' and vix.parked_by == AID)) then
    visit_finish(vix.id, vix, 'completed', 'handover', args.note, 'served')
  end
  branch_event('case.updated', {case = case_id, what = 'handover', queue = args.queue})
  return {interaction = ix_id, case_id = case_id, queue = args.queue, reservation = resv,
          visit = vix and vix.id or cjson.null}
end

ops.appointment = function()
  local _, eteller = teller()
  if eteller then return eteller end
  local case_id, e = case_of(args)
  if not case_id then return e end
  local b = branch_conf()
  if not (b and b.services[args.service]) then
    return 'ERR_INVALID service: branch ' .. BR .. ' does not offer ' .. args.service
  end
  local cust = resolve_customer(redis.call('HGET', B .. 'case:' .. case_id, 'customer_id'))
  local id = 'A-' .. redis.call('INCR', B .. 'seq:appt')
  redis.call('HSET', B .. 'appt:' .. id, 'id', id, 'branch', BR, 'service', args.service, 'at', args.at,
             'case_id', case_id, 'customer_id', cust, 'note', args.note or '', 'by', AID, 'created_at', now)
  redis.call('ZADD', BK .. ':appts', args.at, id)
  local hid = history_add(case_id, now, {'type', 'appointment', 'appointment', id, 'branch', BR,
                                         'service', args.service, 'when', tostring(args.at), 'by', AID})
  bstat('appointments')
  branch_event('appointment.created', {appointment = id, at = args.at, service = args.service, case = case_id})
  return {appointment = id, at = args.at, case_id = case_id, history_id = hid}
end

ops.offer_accept = function()
  local a, ea = teller()
  if not a then return ea end
  local resv = args.reservation
  local r = hash_to_table(redis.call('HGETALL', B .. 'resv:' .. resv))
  if not r.id then return 'ERR_NOT_FOUND no open reservation ' .. resv .. ' (ended or expired)' end
  if r.agent ~= AID then return 'ERR_FORBIDDEN reservation belongs to another agent' end
  if tonumber(r.expires_at) < now then return 'ERR_CONFLICT reservation ' .. resv .. ' expired' end
  redis.call('DEL', B .. 'resv:' .. resv)
  redis.call('ZREM', B .. 'deadlines', 'resv:' .. resv)
  local ikey = B .. 'ix:' .. r.interaction
  local ix = hash_to_table(redis.call('HGETALL', ikey))
  redis.call('HSET', ikey, 'state', 'assigned', 'assigned_at', now, 'agent', AID)
  redis.call('HDEL', ikey, 'reservation')
  redis.call('ZREM', B .. 'deadlines', 'ovf:' .. r.interaction, 'maxw:' .. r.interaction)
  redis.call('HSET', B .. 'agent:' .. AID, 'no_answer', 0)
  redis.call('HSET', B .. 'case:' .. ix.case_id, 'last_agent', AID, 'last_agent_at', now)
  local wait = now - tonumber(ix.created_at)
  local qc = qconf(ix.home_queue or ix.queue)
  qstat(ix.queue, now, 'accepted')
  qstat(ix.queue, now, 'wait_sum_ms', wait)
  if qc and wait <= (tonumber(qc.sla_seconds) or 20) * 1000 then qstat(ix.queue, now, 'in_sla') end
  history_add(ix.case_id, now, {'type', 'offer.accepted', 'interaction', r.interaction, 'agent', AID,
                                'reservation', resv, 'wait_ms', tostring(wait)})
  emit(now, 'offer.accepted', AID, {reservation = resv, interaction = r.interaction, agent = AID,
                                   case = ix.case_id, wait_ms = wait})
  if ix.branch == BR then
    redis.call('ZREM', BK .. ':waiting', r.interaction)
    redis.call('HSET', ikey, 'visit_state', 'called', 'called_at', now, 'counter', args.counter or '')
    bstat('called')
    bstat('wait_sum_ms', wait)
    branch_event('visit.called', {visit = r.interaction, ticket = ix.ticket, counter = args.counter or '',
                                  agent = AID, service = ix.service})
  end
  seen(ix.customer_id)
  return {reservation = resv, interaction = r.interaction, state = 'assigned', case_id = ix.case_id,
          wait_ms = wait}
end

ops.offer_reject = function()
  local _, eteller = teller()
  if eteller then return eteller end
  local r = hash_to_table(redis.call('HGETALL', B .. 'resv:' .. args.reservation))
  if not r.id then return 'ERR_NOT_FOUND no open reservation ' .. args.reservation end
  if r.agent ~= AID then return 'ERR_FORBIDDEN reservation belongs to another agent' end
  reservation_end(args.reservation, now, 'rejected')
  return {reservation = args.reservation, interaction = r.interaction, state = 'queued'}
end

-- first notice of loss: the terminal's capture time is kept beside the server's receipt time
-- (spooled offline, the two differ by the length of the outage)
ops.fnol = function()
  local _, eteller = teller()
  if eteller then return eteller end
  local case_id, e, ix = case_of(args)
  if not case_id then return e end
  local c = redis.call('HMGET', B .. 'case:' .. case_id, 'customer_id', 'policy')
  local id = 'F-' .. redis.call('INCR', B .. 'seq:fnol')
  local policy = args.policy or c[2] or ''
  redis.call('HSET', B .. 'fnol:' .. id, 'id', id, 'case_id', case_id, 'customer_id', resolve_customer(c[1]),
             'policy', policy, 'loss_at', args.loss_at, 'loss_kind', args.loss_kind,
             'description', args.description, 'location', args.location or '', 'branch', BR,
             'terminal', T, 'agent', AID, 'captured_at', args.captured_at, 'received_at', now,
             'interaction', ix and ix.id or '')
  redis.call('SADD', B .. 'case:' .. case_id .. ':fnol', id)
  local hid = history_add(case_id, now, {'type', 'claim.fnol', 'fnol', id, 'policy', policy,
                                         'loss_at', tostring(args.loss_at), 'loss_kind', args.loss_kind,
                                         'captured_at', tostring(args.captured_at), 'received_at', tostring(now),
                                         'by', AID, 'branch', BR, 'summary', string.sub(args.description, 1, 280)})
  bstat('fnol')
  branch_event('case.updated', {case = case_id, history = hid, what = 'fnol'})
  return {fnol = id, case_id = case_id, captured_at = args.captured_at, received_at = now, history_id = hid}
end

local f = ops[op]
if not f then return fail('ERR_INVALID', 'unknown operation ' .. op) end
local res = f()
if type(res) == 'string' then
  local code, msg = string.match(res, '^(ERR_[%u_]+) (.*)$')
  return fail(code or 'ERR_INVALID', msg or res)
end
if MSG ~= '' then
  local json = encode(res)
  redis.call('SET', TK .. ':msg:' .. MSG, op .. '\n' .. json, 'EX', ttl)
  return {0, json}
end
return {0, encode(res)}
