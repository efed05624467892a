-- fax.lua: what the fax channel (channels/fax.c) records next to the interaction ingest
-- wrote. ARGV[1] op, ARGV[2] JSON arguments. Returns JSON.
--   received  {ix, status (received|partial|failed), failure, pages, sender_pages, document,
--              doc_type, resolution, provider}: fax fields on ix:<I>, and on its case's
--              history fax.received / fax.partial / fax.failed (a fax that failed mid-reception
--              is recorded as such, never as a complete document)
--   event     {external_id, event_type, status}: a provider's other events (receiving
--              started, media processed ...) into the case history of the fax, when it exists
--              (events may arrive before the fax itself: then nothing to attach them to)
--   ocr       {ix, text, found = {policy = [...], phone = [...], case = [...]}, cpu_ms}: the OCR
--              text of the first page kept on the interaction; the first identifier that names
--              a known case or customer (case token, then policy, then phone) links the fax to
--              that customer and case; what was found and from where goes in the case history.
--   link      {ix, sha, case | customer}: POST /v1/interactions/{id}/link, an agent holding
--              the interaction (sha of its token) or the admin (sha '') moves it to that case,
--              or to that customer, with the same steps as an OCR link (history on both cases).
local op = ARGV[1]
local a = cjson.decode(ARGV[2])
local now = now_ms()

if op == 'received' then
  local ikey = B .. 'ix:' .. a.ix
  local case_id = redis.call('HGET', ikey, 'case_id')
  if not case_id then return fail('ERR_NOT_FOUND', 'no interaction ' .. a.ix) end
  redis.call('HSET', ikey, 'fax_status', a.status, 'fax_pages', tostring(a.pages or 0),
             'fax_document', a.document or '', 'fax_provider', a.provider or '')
  if a.failure and a.failure ~= '' then redis.call('HSET', ikey, 'fax_failure', a.failure) end
  local etype = 'fax.received'
  if a.status == 'partial' then etype = 'fax.partial' elseif a.status == 'failed' then etype = 'fax.failed' end
  history_add(case_id, now, {'type', etype, 'interaction', a.ix, 'status', a.status,
                             'pages', tostring(a.pages or 0),
                             'sender_pages', tostring(a.sender_pages or ''),
                             'document', a.document or '', 'doc_type', a.doc_type or '',
                             'resolution', a.resolution or '', 'failure', a.failure or '',
                             'provider', a.provider or ''})
  if etype ~= 'fax.received' then
    emit(now, etype, nil, {interaction = a.ix, case = case_id, status = a.status, failure = a.failure})
  end
  return cjson.encode({case = case_id})
end

if op == 'event' then
  local ix_id = redis.call('GET', B .. 'idem:fax:' .. a.external_id)
  if not ix_id then return cjson.encode({known = false}) end
  local case_id = redis.call('HGET', B .. 'ix:' .. ix_id, 'case_id')
  history_add(case_id, now, {'type', 'fax.event', 'interaction', ix_id, 'event', a.event_type,
                             'status', a.status or ''})
  return cjson.encode({known = true, interaction = ix_id, case = case_id})
end

-- Outbound (channels/fax_out.c): the outbox stream outbox:fax with the consumer group
-- 'senders'; faxout:<FX-n> hash per fax sent; faxprov:<provider>:<provider id> -> FX-n.
--   send        {ix, to, document, cover, provider, auth_sha}: queue one fax on the
--               interaction's case ('fax.queued' in the history)
--   claim       {consumer, count, idle_ms, max_attempts}: entries another daemon took and did
--               not finish for idle_ms (died, or a provider error left it pending: that is the
--               retry) and new ones; [{entry, job, attempt}]. Past max_attempts: failed.
--   result      {entry, id, outcome = sent|failed|retry, provider_id, error}: sent and failed
--               acknowledge the entry (once: 'stale' when another daemon did); retry leaves
--               it pending for a later claim
--   out_status  {provider, provider_id, status = sending|delivered|failed, error, pages}: the
--               provider's status callback onto the case history
--   stuck       {stuck_ms, limit}: faxes queued more than stuck_ms ago with no final status
--               (delivered / failed) yet, oldest first, at most limit: flagged (stuck_at on
--               faxout:, fax.stuck in the case history, an event), each once. faxout:open
--               (sorted set, score: queued at) holds the faxes without a final status.
local OUT = B .. 'outbox:fax'
if op == 'send' then
  if a.auth_sha and a.auth_sha ~= '' and not redis.call('GET', B .. 'token:' .. a.auth_sha) then
    return fail('ERR_FORBIDDEN', 'token: not an agent token')
  end
  local ix = hash_to_table(redis.call('HGETALL', B .. 'ix:' .. a.ix))
  if not ix.id then return fail('ERR_NOT_FOUND', 'no interaction ' .. a.ix) end
  local id = 'FX-' .. redis.call('INCR', B .. 'seq:faxout')
  redis.call('HSET', B .. 'faxout:' .. id, 'id', id, 'interaction', a.ix, 'case', ix.case_id,
             'to', a.to, 'document', a.document, 'status', 'queued', 'created_at', now,
             'attempts', 0, 'provider', a.provider)
  local job = cjson.encode({id = id, interaction = a.ix, case = ix.case_id, to = a.to,
                            document = a.document, cover = a.cover or '', provider = a.provider})
  redis.pcall('XGROUP', 'CREATE', OUT, 'senders', '0', 'MKSTREAM')
  local entry = redis.call('XADD', OUT, '*', 'job', job)
  redis.call('HSET', B .. 'faxout:' .. id, 'entry', entry) -- erase.lua withdraws it unsent
  redis.call('ZADD', B .. 'faxout:open', now, id)
  history_add(ix.case_id, now, {'type', 'fax.queued', 'interaction', a.ix, 'fax', id, 'to', a.to,
                                'document', a.document})
  return cjson.encode({id = id, case = ix.case_id, status = 'queued'})
end

local function out_failed(id, why)
  local h = hash_to_table(redis.call('HGETALL', B .. 'faxout:' .. id))
  redis.call('HSET', B .. 'faxout:' .. id, 'status', 'failed', 'error', why, 'failed_at', now)
  redis.call('ZREM', B .. 'faxout:open', id)
  if h.case then
    history_add(h.case, now, {'type', 'fax.send_failed', 'interaction', h.interaction or '',
                              'fax', id, 'to', h.to or '', 'error', why})
    emit(now, 'fax.send_failed', nil, {case = h.case, interaction = h.interaction, fax = id})
  end
end

if op == 'stuck' then
  local open = B .. 'faxout:open'
  local ids = redis.call('ZRANGEBYSCORE', open, '-inf', now - a.stuck_ms, 'LIMIT', 0, a.limit)
  local flagged = {}
  for _, id in ipairs(ids) do
    redis.call('ZREM', open, id)
    local okey = B .. 'faxout:' .. id
    local h = hash_to_table(redis.call('HGETALL', okey))
    if h.case and h.status ~= 'delivered' and h.status ~= 'failed' then
      redis.call('HSET', okey, 'stuck_at', now)
      history_add(h.case, now, {'type', 'fax.stuck', 'interaction', h.interaction or '', 'fax', id,
                                'to', h.to or '', 'status', h.status or '',
                                'queued_at', h.created_at or '',
                                'attempts', h.attempts or '0', 'error', h.last_error or ''})
      emit(now, 'fax.stuck', nil, {case = h.case, interaction = h.interaction, fax = id,
                                   status = h.status})
      flagged[#flagged + 1] = id
    end
  end
  if #flagged == 0 then return '[]' end
  return cjson.encode(flagged)
end

if op == 'claim' then
  redis.pcall('XGROUP', 'CREATE', OUT, 'senders', '0', 'MKSTREAM')
  local out, entries = {}, {}
  local claimed = redis.call('XAUTOCLAIM', OUT, 'senders', a.consumer, a.idle_ms, '0-0', 'COUNT', a.count)
  for _, e in ipairs(claimed[2] or {}) do entries[#entries + 1] = e end
  if #entries < a.count then
    local r = redis.call('XREADGROUP', 'GROUP', 'senders', a.consumer, 'COUNT', a.count - #entries,
                         'STREAMS', OUT, '>')
    if r then for _, e in ipairs(r[1][2]) do entries[#entries + 1] = e end end
  end
  for _, e in ipairs(entries) do
    if type(e) == 'table' and type(e[2]) == 'table' then
      local f = hash_to_table(e[2])
      local job = f.job and cjson.decode(f.job)
      if job then
        local n = redis.call('HINCRBY', B .. 'faxout:' .. job.id, 'attempts', 1)
        if n > a.max_attempts then
          redis.call('XACK', OUT, 'senders', e[1])
          redis.call('XDEL', OUT, e[1])
          out_failed(job.id, 'gave up after ' .. a.max_attempts .. ' attempts: ' ..
                     (redis.call('HGET', B .. 'faxout:' .. job.id, 'last_error') or ''))
        else
          out[#out + 1] = {entry = e[1], job = f.job, attempt = n}
        end
      end
    end
  end
  if #out == 0 then return '[]' end
  return cjson.encode(out)
end

if op == 'result' then
  local okey = B .. 'faxout:' .. a.id
  if a.outcome == 'retry' then
    redis.call('HSET', okey, 'last_error', a.error or '', 'status', 'retrying')
    return cjson.encode({result = 'retry'})
  end
  if redis.call('XACK', OUT, 'senders', a.entry) == 0 then return cjson.encode({result = 'stale'}) end
  redis.call('XDEL', OUT, a.entry)
  if a.outcome == 'sent' then
    local h = hash_to_table(redis.call('HGETALL', okey))
    redis.call('HSET', okey, 'status', 'sent', 'sent_at', now, 'provider_id', a.provider_id)
    redis.call('SET', B .. 'faxprov:' .. h.provider .. ':' .. a.provider_id, a.id)
    history_add(h.case, now, {'type', 'fax.sent', 'interaction', h.interaction, 'fax', a.id,
                              'to', h.to, 'provider_id', a.provider_id})
    emit(now, 'fax.sent', nil, {case = h.case, interaction = h.interaction, fax = a.id})
  else
    out_failed(a.id, a.error or 'refused by the provider')
  end
  return cjson.encode({result = a.outcome})
end

if op == 'out_status' then
  local id = redis.call('GET', B .. 'faxprov:' .. a.provider .. ':' .. a.provider_id)
  if not id then return cjson.encode({known = false}) end
  local okey = B .. 'faxout:' .. id
  local h = hash_to_table(redis.call('HGETALL', okey))
  -- a status told again (a provider's retried callback, HylaFAX's done queue read at every
  -- poll) changes nothing
  if h.status == 'delivered' or h.status == 'failed' then
    return cjson.encode({known = true, fax = id, final = h.status})
  end
  if a.status == 'sending' then
    -- the provider started dialling (once: a repeated event changes nothing)
    if h.status ~= 'sending' then
      redis.call('HSET', okey, 'status', 'sending', 'sending_at', now)
      history_add(h.case, now, {'type', 'fax.sending', 'interaction', h.interaction, 'fax', id, 'to', h.to})
      emit(now, 'fax.sending', nil, {case = h.case, interaction = h.interaction, fax = id})
    end
  elseif a.status == 'delivered' then
    redis.call('HSET', okey, 'status', 'delivered', 'delivered_at', now, 'pages', tostring(a.pages or ''))
    redis.call('ZREM', B .. 'faxout:open', id)
    history_add(h.case, now, {'type', 'fax.delivered', 'interaction', h.interaction, 'fax', id,
                              'to', h.to, 'pages', tostring(a.pages or '')})
    emit(now, 'fax.delivered', nil, {case = h.case, interaction = h.interaction, fax = id})
  else
    out_failed(id, a.error or 'not delivered')
  end
  return cjson.encode({known = true, fax = id})
end

-- Move interaction ix (its hash as a table) to customer target, and to case target_case when
-- given (else the customer's open case for policy, or the interaction's own new case handed
-- over, or a new case). by: who decided (ocr, agent:<id>, admin); matched: on what. History
-- on both cases: interaction.linked on the new one, <channel>.relinked on the old one.
-- Returns new_case, new_cust, moved.
local function relink(ix_id, ix, target, target_case, policy, by, matched)
  local ikey = B .. 'ix:' .. ix_id
  local chan = ix.channel or 'fax'
  local old_case, old_cust = ix.case_id, ix.customer_id
  local new_case, new_cust = old_case, old_cust
  local moved = false
  if not (target and (target ~= old_cust or (target_case and target_case ~= old_case))) then
    return new_case, new_cust, moved
  end
  local okey = B .. 'case:' .. old_case
  local oc = hash_to_table(redis.call('HGETALL', okey))
  -- the case ingest opened for this very interaction (same instant, nothing else in it)
  local own_case = oc.created_at == ix.created_at and oc.opened_by == chan
  local tkey = B .. 'cust:' .. target
  if target_case then
    new_case = target_case
  else
    local p = policy or ''
    local c = redis.call('HGET', tkey .. ':open', p)
    if c and redis.call('HGET', B .. 'case:' .. c, 'status') == 'open' then new_case = c end
    if new_case == old_case and own_case then
      -- hand the interaction's own case over to the customer it belongs to
      local op_ = oc.policy or ''
      if redis.call('HGET', B .. 'cust:' .. old_cust .. ':open', op_) == old_case then
        redis.call('HDEL', B .. 'cust:' .. old_cust .. ':open', op_)
      end
      redis.call('ZREM', B .. 'cust:' .. old_cust .. ':cases', old_case)
      redis.call('HSET', okey, 'customer_id', target, 'policy', p)
      if not redis.call('HGET', tkey .. ':open', p) then redis.call('HSET', tkey .. ':open', p, old_case) end
      redis.call('ZADD', tkey .. ':cases', now, old_case)
      history_add(old_case, now, {'type', 'case.customer_changed', 'interaction', ix_id,
                                  'from', old_cust, 'to', target, 'by', by, 'matched', matched})
    elseif new_case == old_case then
      -- the interaction had joined another case of the sender: a new case for the customer
      new_case = 'C-' .. redis.call('INCR', B .. 'seq:case')
      redis.call('HSET', B .. 'case:' .. new_case, 'id', new_case, 'customer_id', target,
                 'policy', p, 'status', 'open', 'created_at', now, 'opened_by', chan)
      if not redis.call('HGET', tkey .. ':open', p) then redis.call('HSET', tkey .. ':open', p, new_case) end
      redis.call('ZADD', tkey .. ':cases', now, new_case)
      history_add(new_case, now, {'type', 'case.opened', 'interaction', ix_id, 'channel', chan})
    end
  end
  new_cust = target
  if new_case ~= old_case then
    moved = true
    history_add(old_case, now, {'type', chan .. '.relinked', 'interaction', ix_id, 'to_case', new_case,
                                'by', by, 'matched', matched})
    if own_case then
      redis.call('HSET', okey, 'status', 'closed', 'closed_at', now, 'closed_reason',
                 chan .. ' linked to ' .. new_case)
      local op_ = oc.policy or ''
      local owner = redis.call('HGET', okey, 'customer_id')
      if redis.call('HGET', B .. 'cust:' .. owner .. ':open', op_) == old_case then
        redis.call('HDEL', B .. 'cust:' .. owner .. ':open', op_)
      end
    end
    history_add(new_case, now, {'type', 'interaction.linked', 'interaction', ix_id,
                                'channel', chan, 'from_case', old_case, 'by', by,
                                'matched', matched, 'summary', ix.subject or ''})
  end
  redis.call('HSET', B .. 'case:' .. new_case, 'updated_at', now, 'last_channel', chan)
  redis.call('ZADD', tkey .. ':cases', 'GT', now, new_case)
  redis.call('HSET', ikey, 'case_id', new_case, 'customer_id', new_cust, 'linked_by', by,
             'linked_match', matched)
  local seg = redis.call('HGET', tkey, 'segment')
  if seg then redis.call('HSET', ikey, 'segment', seg) end
  return new_case, new_cust, moved
end

if op == 'link' then
  -- an agent's (or the admin's) correction: {ix, sha, case | customer}
  local ix = hash_to_table(redis.call('HGETALL', B .. 'ix:' .. a.ix))
  if not ix.id then return fail('ERR_NOT_FOUND', 'no interaction ' .. a.ix) end
  local sha = a.sha or ''
  if sha ~= '' and (not ix.agent or ix.agent == '' or
                    redis.call('GET', B .. 'token:' .. sha) ~= ix.agent) then
    return fail('ERR_FORBIDDEN', 'not your interaction')
  end
  local by = sha == '' and 'admin' or ('agent:' .. ix.agent)
  local target, target_case, matched
  if a.case then
    local c = hash_to_table(redis.call('HGETALL', B .. 'case:' .. a.case))
    if not c.id then return fail('ERR_NOT_FOUND', 'no case ' .. a.case) end
    if c.status ~= 'open' then return fail('ERR_CONFLICT', a.case .. ' is ' .. tostring(c.status) .. ', not open') end
    if a.case == ix.case_id then return fail('ERR_CONFLICT', a.ix .. ' is already in ' .. a.case) end
    target, target_case, matched = resolve_customer(c.customer_id), a.case, 'case:' .. a.case
  else
    if redis.call('EXISTS', B .. 'cust:' .. a.customer) == 0 then
      return fail('ERR_NOT_FOUND', 'no customer ' .. a.customer)
    end
    target, matched = resolve_customer(a.customer), 'customer:' .. a.customer
    if target == ix.customer_id then
      return fail('ERR_CONFLICT', a.ix .. ' is already with ' .. target)
    end
  end
  local old_case = ix.case_id
  local new_case, new_cust, moved = relink(a.ix, ix, target, target_case, nil, by, matched)
  emit(now, 'interaction.linked', ix.agent ~= '' and ix.agent or nil,
       {interaction = a.ix, case = new_case, from_case = old_case, customer = new_cust, by = by})
  return cjson.encode({id = a.ix, case = new_case, customer = new_cust, from_case = old_case,
                       moved = moved, by = by})
end

if op ~= 'ocr' then return fail('ERR_INVALID', 'op: unknown ' .. tostring(op)) end

local ikey = B .. 'ix:' .. a.ix
local ix = hash_to_table(redis.call('HGETALL', ikey))
if not ix.id then return fail('ERR_NOT_FOUND', 'no interaction ' .. a.ix) end
redis.call('HSET', ikey, 'ocr_text', utf8_prefix(a.text or '', 16384), 'ocr_at', now)
local found = type(a.found) == 'table' and a.found or {}
local function list(k) return type(found[k]) == 'table' and found[k] or {} end

local target, matched, target_case, policy
for _, c in ipairs(list('case')) do
  if redis.call('EXISTS', B .. 'case:' .. c) == 1 then
    target_case = c
    target = resolve_customer(redis.call('HGET', B .. 'case:' .. c, 'customer_id'))
    matched = 'case:' .. c
    break
  end
end
if not target then
  for _, p in ipairs(list('policy')) do
    local c = redis.call('GET', B .. 'idx:policy:' .. p)
    if c then
      target, matched, policy = resolve_customer(c), 'policy:' .. p, p
      break
    end
  end
end
if not target then
  for _, p in ipairs(list('phone')) do
    local c = redis.call('GET', B .. 'idx:phone:' .. p)
    if c then
      c = resolve_customer(c)
      if c ~= ix.customer_id then
        target, matched = c, 'phone:' .. p
        break
      end
    end
  end
end

local new_case, new_cust, moved = relink(a.ix, ix, target, target_case, policy, 'ocr', matched)
-- what was found and from where, kept on the interaction for the agent (the history entry
-- stays on the case it was written to, even after the fax is moved by hand)
redis.call('HSET', ikey, 'ocr_found', cjson.encode(found), 'ocr_source', 'ocr:page1',
           'ocr_matched', matched or '')

history_add(new_case, now, {'type', 'fax.ocr', 'interaction', a.ix, 'source', 'ocr:page1',
                            'found', cjson.encode(found), 'matched', matched or '',
                            'chars', tostring(#(a.text or '')),
                            'cpu_ms', tostring(a.cpu_ms or 0)})
-- the live events stream is kept for days and read by every desktop: it names what kind of
-- identifier matched, never its value (the case history has it, and erasure clears it there)
-- to the agent the fax is offered to or held by (their desktop shows the findings), and
-- supervisors
emit(now, 'fax.ocr', (ix.agent and ix.agent ~= '') and ix.agent or nil, {interaction = a.ix, case = new_case, customer = new_cust,
                           matched = matched and string.match(matched, '^[^:]+') or nil, moved = moved})
return cjson.encode({case = new_case, customer = new_cust, matched = matched or '',
                     moved = moved, linked = target ~= nil})
