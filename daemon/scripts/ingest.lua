-- ingest.lua: one interaction in, atomically: idempotency on (channel, external_id) ->
-- resolve or create the customer from its identifiers (conflicts recorded, never merged)
-- -> attach to a case -> write the interaction -> case history -> enqueue for routing
-- -> event. ARGV[1]: the normalised interaction as JSON (see daemon/api_interactions.c).
-- Returns {interaction_id, case_id, customer_id, duplicate(0/1), conflicts_json}.
local ix = cjson.decode(ARGV[1])
local now = now_ms()

local idem = B .. 'idem:' .. ix.channel .. ':' .. ix.external_id
local prev = redis.call('GET', idem)
if prev then
  local h = redis.call('HMGET', B .. 'ix:' .. prev, 'case_id', 'customer_id')
  return {prev, h[1] or '', h[2] or '', 1, '[]', ''}
end

-- Email threading (optional, channels/email_ingest.c): metadata.thread = {refs = message ids,
-- most relevant first (In-Reply-To, then References newest first), case = a case named by a
-- subject token or plus-address, msgid = this message's id, text = the reply without its
-- quoted history}. A reply joins the case of the first referenced message omnicc has seen or
-- sent (msgid:<id> -> case, written below and by email_reply.lua), else the named case if it
-- exists; otherwise the usual rules apply. Other channels never carry it.
local thread
if ix.metadata and string.find(ix.metadata, '"thread"', 1, true) then
  local m = cjson.decode(ix.metadata)
  if type(m.thread) == 'table' then thread = m.thread end
end
if thread and not (ix.case_id and ix.case_id ~= '') then
  local refs = type(thread.refs) == 'table' and thread.refs or {}
  for i = 1, math.min(#refs, 20) do
    local c = redis.call('GET', B .. 'msgid:' .. tostring(refs[i]))
    if c and redis.call('EXISTS', B .. 'case:' .. c) == 1 then
      ix.case_id = c
      break
    end
  end
  if not ix.case_id and type(thread.case) == 'string' and
     redis.call('EXISTS', B .. 'case:' .. thread.case) == 1 then
    ix.case_id = thread.case
  end
end

local case_id = ix.case_id
if case_id and case_id ~= '' and redis.call('EXISTS', B .. 'case:' .. case_id) == 0 then
  return fail('ERR_NOT_FOUND', 'case_id: no case ' .. case_id)
end

local ix_id = 'I-' .. redis.call('INCR', B .. 'seq:ix')

-- identity: identifiers arrive strongest first (policy, national id, branch id, email, phone)
local found, found_by, unmapped = {}, {}, {}
for _, pair in ipairs(ix.ids) do
  local c = redis.call('GET', B .. 'idx:' .. pair[1] .. ':' .. pair[2])
  if c then
    c = resolve_customer(c)
    if not found_by[c] then
      found[#found + 1] = c
      found_by[c] = pair[1] .. ':' .. pair[2]
    end
  else
    unmapped[#unmapped + 1] = pair
  end
end

local cust, segment
if #found == 0 and case_id and case_id ~= '' then
  -- nothing identifies the sender, but the case does: it is its owner's interaction
  cust = resolve_customer(redis.call('HGET', B .. 'case:' .. case_id, 'customer_id'))
elseif #found == 0 then
  -- a new customer is written whole here, so nothing below reads it back
  cust = 'P-' .. redis.call('INCR', B .. 'seq:cust')
  segment = 'standard'
  local h = {'HSET', B .. 'cust:' .. cust, 'id', cust, 'created_at', now, 'segment', segment,
             'updated_at', now}
  if ix.name and ix.name ~= '' then h[#h + 1] = 'name'; h[#h + 1] = ix.name end
  redis.call(unpack(h))
else
  cust = found[1]
end
local ckey = B .. 'cust:' .. cust
local ids = {}
for _, pair in ipairs(unmapped) do
  redis.call('SET', B .. 'idx:' .. pair[1] .. ':' .. pair[2], cust)
  ids[#ids + 1] = pair[1] .. ':' .. pair[2]
end
if #ids > 0 then redis.call('SADD', ckey .. ':ids', unpack(ids)) end
if not segment then
  local h = redis.call('HMGET', ckey, 'name', 'segment')
  segment = h[2] or 'standard'
  if ix.name and ix.name ~= '' and not h[1] then
    redis.call('HSET', ckey, 'name', ix.name, 'updated_at', now)
  else
    redis.call('HSET', ckey, 'updated_at', now)
  end
end

local conflicts = {}
for i = 2, #found do
  local other = found[i]
  local c = cjson.encode({at = now, interaction = ix_id, customer = cust, matched = found_by[cust],
                          other_customer = other, other_matched = found_by[other]})
  redis.call('RPUSH', ckey .. ':conflicts', c)
  redis.call('RPUSH', B .. 'cust:' .. other .. ':conflicts', c)
  conflicts[#conflicts + 1] = other
end

-- case: explicit reference, else the customer's open case on the same policy, else new
local rp_new_case = false -- analytics: counted by rollup_arrival below
local policy = ix.policy or ''
local ckey_case
if case_id and case_id ~= '' then
  ckey_case = B .. 'case:' .. case_id
  if redis.call('HGET', ckey_case, 'status') ~= 'open' then
    redis.call('HSET', ckey_case, 'status', 'open')
    redis.call('HDEL', ckey_case, 'closed_at')
    history_add(case_id, now, {'type', 'case.reopened', 'by', 'interaction', 'interaction', ix_id})
    local p = redis.call('HGET', ckey_case, 'policy') or ''
    local owner = redis.call('HGET', ckey_case, 'customer_id')
    if owner and not redis.call('HGET', B .. 'cust:' .. owner .. ':open', p) then
      redis.call('HSET', B .. 'cust:' .. owner .. ':open', p, case_id)
    end
  end
else
  case_id = redis.call('HGET', ckey .. ':open', policy)
  if case_id and redis.call('HGET', B .. 'case:' .. case_id, 'status') ~= 'open' then
    case_id = nil
  end
  if not case_id then
    case_id = 'C-' .. redis.call('INCR', B .. 'seq:case')
    redis.call('HSET', B .. 'case:' .. case_id, 'id', case_id, 'customer_id', cust,
               'policy', policy, 'status', 'open', 'created_at', now, 'opened_by', ix.channel,
               'updated_at', now, 'last_channel', ix.channel)
    redis.call('HSET', ckey .. ':open', policy, case_id)
    redis.call('ZADD', ckey .. ':cases', now, case_id)
    history_add(case_id, now, {'type', 'case.opened', 'interaction', ix_id, 'channel', ix.channel})
    rp_new_case = true
  end
  ckey_case = B .. 'case:' .. case_id
end
if not rp_new_case then -- a new case was written whole above
  redis.call('HSET', ckey_case, 'updated_at', now, 'last_channel', ix.channel)
  redis.call('ZADD', ckey .. ':cases', 'GT', now, case_id)
end

-- priority: channel base + explicit priority (seconds, computed by the daemon) + segment.
-- Folded into the waiting score as a head start, so ageing needs no rewrite.
local boost = (tonumber(ix.boost) or 0) + (tonumber(ix.segment_boosts[segment]) or 0)
local score = now / 1000 - boost

local ikey = B .. 'ix:' .. ix_id
local h = {'HSET', ikey, 'id', ix_id, 'channel', ix.channel, 'direction', ix.direction,
           'external_id', ix.external_id, 'customer_id', cust, 'case_id', case_id,
           'queue', ix.queue, 'home_queue', ix.queue, 'state', 'queued', 'created_at', now,
           'segment', segment, 'wait_score', score}
for _, f in ipairs({'from', 'to', 'subject', 'body', 'skills', 'metadata', 'name'}) do
  if ix[f] and ix[f] ~= '' then h[#h + 1] = f; h[#h + 1] = ix[f] end
end
if ix.priority and ix.priority > 0 then h[#h + 1] = 'priority'; h[#h + 1] = ix.priority end
redis.call(unpack(h))
redis.call('SET', idem, ix_id)

local summary = ix.subject or ''
if summary == '' and ix.body then summary = utf8_prefix(ix.body, 280) end
local received = {'type', 'interaction.received', 'interaction', ix_id,
                  'channel', ix.channel, 'direction', ix.direction, 'from', ix.from or '',
                  'summary', summary}
if thread then
  if type(thread.msgid) == 'string' then redis.call('SET', B .. 'msgid:' .. thread.msgid, case_id) end
  if type(thread.text) == 'string' then
    received[#received + 1] = 'text'
    received[#received + 1] = thread.text
  end
end
rollup_arrival(ix_id, ix, case_id, segment, now, rp_new_case) -- its facts go on 'received'
history_add(case_id, now, received)

-- enqueue and make the routing decision in the same call: an arrival is offered at once
-- when an eligible agent is free
ix_enqueue(ix_id, {queue = ix.queue, channel = ix.channel, wait_score = score, created_at = now}, now)
emit(now, 'interaction.queued', nil, {interaction = ix_id, case = case_id, customer = cust,
                                      channel = ix.channel, queue = ix.queue})
local resv = route_interaction(ix_id, now) or ''

local cj = '[]'
if #conflicts > 0 then cj = cjson.encode(conflicts) end
return {ix_id, case_id, cust, 0, cj, resv}
