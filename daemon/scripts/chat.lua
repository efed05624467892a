-- chat.lua: web chat sessions (channels/webchat.c). A session S is one webchat interaction
-- (external_id = S, found through idem:webchat:S); its visitor-facing events go to the
-- 'events' stream with a 'session' field (fan-out to the visitor's SSE stream) and to
-- chat:S:events with the same entry id (replay on Last-Event-ID); the ones the holding agent
-- must see also go to that agent's stream. Messages are case history.
-- ARGV[1] is the operation:
--   open S visitor ip topic name ip_session_limit verified retryable -> 'ok', or 'again' when
--        retryable (a client_id was given) and S is already this visitor's
--   message S who auth text client_id visitor_rate             -> {entry id, interaction, dup}
--   typing S who auth                                          -> 'ok' | 'ended'
--   close S who auth                                           -> {'ok'|'ended', interaction, state}
--   connect S visitor                                          -> {interaction, state, session state}
--   gone S                                                     -> {'here'|'ended'|'away'|'abandon', interaction}
--   sync interaction event_type event_id                       -> 'ok' | 'skip' | 'dup'
--   messages S who auth                                        -> JSON transcript
--   timeline interaction auth [limits JSON]                    -> JSON timeline of the customer
--     (limits: what a reply may carry, given back as interaction.reply_limits for email)
-- who: 'visitor' (auth = the visitor id from the verified visitor token) or 'agent' (auth =
-- sha256 of the agent's bearer token, '' for the admin token).
local op = ARGV[1]
local now = now_ms()
local CHAT_TTL = 7 * 86400
local CHAT_KEEP = '2000'

local function id_lt(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, bm = tonumber(am) or 0, tonumber(bm) or 0
  if am ~= bm then return am < bm end
  return (tonumber(as) or 0) < (tonumber(bs) or 0)
end

-- One event: 'events' (with the session field), the chat's own stream when persist, and
-- the agent's stream when aid is given; the same entry id everywhere.
local function chat_emit(S, etype, aid, data, persist)
  local payload = cjson.encode(data)
  local id = event_add(now, {'type', etype, 'agent', aid or '', 'session', S, 'data', payload})
  if persist then
    redis.call('XADD', B .. 'chat:' .. S .. ':events', 'MAXLEN', '~', CHAT_KEEP, id,
               'at', tostring(now), 'type', etype, 'agent', '', 'session', S, 'data', payload)
  end
  if aid and aid ~= '' then
    redis.call('XADD', B .. 'agent:' .. aid .. ':events', 'MAXLEN', '~', '2000', id,
               'at', tostring(now), 'type', etype, 'agent', aid, 'data', payload)
  end
  return id
end

local function touch(S)
  redis.call('EXPIRE', B .. 'chat:' .. S, CHAT_TTL)
  redis.call('EXPIRE', B .. 'chat:' .. S .. ':events', CHAT_TTL)
end

-- The session, its interaction (may be empty right after open) and the caller's role.
local function load(S)
  local sess = hash_to_table(redis.call('HGETALL', B .. 'chat:' .. S))
  if not sess.id then return nil end
  local ix_id = redis.call('GET', B .. 'idem:webchat:' .. S)
  local ix = {}
  if ix_id then ix = hash_to_table(redis.call('HGETALL', B .. 'ix:' .. ix_id)) end
  return sess, ix_id or '', ix
end

local function allowed(sess, ix, who, auth)
  if who == 'visitor' then return sess.visitor == auth end
  return agent_authorised(ix.agent or '', auth) and (auth == '' or (ix.agent or '') ~= '')
end

local function from_of(who) if who == 'visitor' then return 'customer' end return 'agent' end

local function end_chat(S, sess, ix_id, ix, by, reason)
  redis.call('HSET', B .. 'chat:' .. S, 'state', 'ended', 'ended_by', by, 'ended_at', now)
  chat_emit(S, 'chat.ended', ix.agent or '', {session = S, interaction = ix_id, by = by,
                                              reason = reason}, true)
  if ix.case_id then
    history_add(ix.case_id, now, {'type', 'chat.ended', 'interaction', ix_id, 'session', S,
                                  'by', by, 'reason', reason})
  end
  touch(S)
end

-- the visitor hears of an agent once, before anything that agent writes (the accept is
-- seen through the event stream, which may come after the agent's first reply)
local function join(S, sess, aid)
  if not aid or aid == '' or sess.joined == aid then return end
  local name = redis.call('HGET', B .. 'agent:' .. aid, 'name')
  if not name or name == '' then name = 'An agent' end
  redis.call('HSET', B .. 'chat:' .. S, 'joined', aid, 'agent_name', name)
  sess.joined, sess.agent_name = aid, name
  chat_emit(S, 'chat.agent_joined', '', {session = S, name = name}, true)
end

if op == 'open' then
  local S, visitor, ip, topic, name = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local limit, verified, retryable = tonumber(ARGV[7]), ARGV[8], ARGV[9] == '1'
  local skey = B .. 'chat:' .. S
  if redis.call('EXISTS', skey) == 1 then
    -- the same client_id again from the same visitor: a retry, answered with the session
    -- (the daemon then ingests again, which the interaction's idempotency key makes a no-op)
    if retryable and redis.call('HGET', skey, 'visitor') == visitor then return 'again' end
    return fail('ERR_CONFLICT', 'session exists')
  end
  local rk = B .. 'chat:rate:ipS:' .. ip .. ':' .. math.floor(now / 3600000)
  local n = redis.call('INCR', rk)
  if n == 1 then redis.call('EXPIRE', rk, 7200) end
  if n > limit then return fail('ERR_RATE', 'too many new chats from this address; retry later') end
  redis.call('HSET', skey, 'id', S, 'visitor', visitor, 'ip', ip, 'topic', topic, 'name', name,
             'state', 'open', 'created_at', now, 'streams', 0, 'verified', verified)
  chat_emit(S, 'chat.opened', '', {session = S, topic = topic}, true)
  touch(S)
  return 'ok'
end

if op == 'sync' then
  -- an interaction event seen on the 'events' stream (by every instance): tell the visitor
  local ix_id, etype, eid = ARGV[2], ARGV[3], ARGV[4]
  local h = redis.call('HMGET', B .. 'ix:' .. ix_id, 'channel', 'external_id', 'agent')
  if h[1] ~= 'webchat' then return 'skip' end
  local S = h[2]
  local skey = B .. 'chat:' .. S
  local sess = hash_to_table(redis.call('HGETALL', skey))
  if not sess.id then return 'skip' end
  if sess.synced and not id_lt(sess.synced, eid) then return 'dup' end
  redis.call('HSET', skey, 'synced', eid)
  if etype == 'offer.accepted' then
    if sess.state == 'open' then join(S, sess, h[3] or '') end
  elseif etype == 'interaction.transferred' then
    redis.call('HSET', skey, 'joined', '')
    chat_emit(S, 'chat.agent_left', '', {session = S, name = sess.agent_name or 'The agent',
                                         reason = 'transferred'}, true)
  elseif sess.state == 'open' then
    local by = 'agent'
    if etype == 'interaction.abandoned' then by = 'customer' end
    if etype == 'interaction.canceled' then by = 'system' end
    redis.call('HSET', skey, 'state', 'ended', 'ended_by', by, 'ended_at', now)
    if by == 'agent' then
      chat_emit(S, 'chat.agent_left', '', {session = S, name = sess.agent_name or 'The agent',
                                           reason = 'ended'}, true)
    end
    chat_emit(S, 'chat.ended', '', {session = S, interaction = ix_id, by = by}, true)
    touch(S)
  end
  return 'ok'
end

if op == 'timeline' then
  local ix_id, auth = ARGV[2], ARGV[3]
  local ix = hash_to_table(redis.call('HGETALL', B .. 'ix:' .. ix_id))
  if not ix.id then return fail('ERR_NOT_FOUND', 'no interaction ' .. ix_id) end
  if not allowed({}, ix, 'agent', auth) then
    return fail('ERR_FORBIDDEN', 'interaction ' .. ix_id .. ' is not offered to or held by you')
  end
  local cid = resolve_customer(ix.customer_id)
  local ckey = B .. 'cust:' .. cid
  local cust = hash_to_table(redis.call('HGETALL', ckey))
  local ids = {}
  for _, m in ipairs(redis.call('SMEMBERS', ckey .. ':ids')) do
    local k, v = string.match(m, '^([^:]+):(.*)$')
    if k and k ~= 'ext' then ids[#ids + 1] = {type = k, value = v} end
  end
  table.sort(ids, function(a, b) return a.type .. a.value < b.type .. b.value end)
  local cases, entries = {}, {}
  for _, case_id in ipairs(redis.call('ZREVRANGE', ckey .. ':cases', 0, 9)) do
    local c = redis.call('HMGET', B .. 'case:' .. case_id, 'status', 'policy', 'last_channel', 'updated_at')
    cases[#cases + 1] = {id = case_id, status = c[1], policy = c[2], last_channel = c[3],
                         updated_at = tonumber(c[4])}
    for _, e in ipairs(redis.call('XREVRANGE', B .. 'case:' .. case_id .. ':hist', '+', '-', 'COUNT', 50)) do
      local ev = hash_to_table(e[2])
      ev.id, ev.case = e[1], case_id
      if ev.at then ev.at = tonumber(ev.at) end
      entries[#entries + 1] = ev
    end
  end
  table.sort(entries, function(a, b) return id_lt(b.id, a.id) end)
  local timeline = {}
  for i = 1, math.min(#entries, 150) do timeline[i] = entries[i] end
  local reply_limits = nil
  if ix.channel == 'email' and ARGV[4] and ARGV[4] ~= '' then reply_limits = cjson.decode(ARGV[4]) end
  return cjson.encode({
    interaction = {id = ix_id, channel = ix.channel, state = ix.state, case_id = ix.case_id,
                   external_id = ix.external_id, queue = ix.queue, from = ix.from,
                   subject = ix.subject, body = ix.body, created_at = tonumber(ix.created_at),
                   metadata = ix.metadata and cjson.decode(ix.metadata) or nil,
                   linked_by = ix.linked_by, linked_match = ix.linked_match,
                   ocr_at = tonumber(ix.ocr_at), ocr_source = ix.ocr_source,
                   ocr_matched = ix.ocr_matched,
                   ocr_found = ix.ocr_found and cjson.decode(ix.ocr_found) or nil,
                   reply_limits = reply_limits},
    customer = {id = cid, name = cust.name, segment = cust.segment or 'standard', identifiers = ids},
    cases = cases, timeline = timeline})
end

-- every other operation names a session
local S = ARGV[2]
local sess, ix_id, ix = load(S)
if not sess then return fail('ERR_NOT_FOUND', 'no chat session ' .. S) end
local skey = B .. 'chat:' .. S

if op == 'message' then
  local who, auth, text, cid, rate = ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
  if not allowed(sess, ix, who, auth) then return fail('ERR_FORBIDDEN', 'not your chat') end
  if who == 'agent' and ix.state ~= 'assigned' then
    return fail('ERR_CONFLICT', 'chat ' .. S .. ' is ' .. (ix.state or 'not routed') .. ', not assigned')
  end
  if sess.state ~= 'open' then return fail('ERR_CONFLICT', 'the chat has ended') end
  local ckey = skey .. ':cid:' .. cid
  if cid ~= '' then
    local prev = redis.call('GET', ckey)
    if prev then return {prev, ix_id, 1} end
  end
  if who == 'visitor' then
    local rk = B .. 'chat:rate:v:' .. auth .. ':' .. math.floor(now / 60000)
    local n = redis.call('INCR', rk)
    if n == 1 then redis.call('EXPIRE', rk, 120) end
    if n > rate then return fail('ERR_RATE', 'too many messages; wait a moment') end
  end
  local name
  if who == 'visitor' then
    name = (sess.name and sess.name ~= '') and sess.name or 'Customer'
  else
    name = redis.call('HGET', B .. 'agent:' .. ix.agent, 'name')
    if not name or name == '' then name = 'Agent' end
  end
  local from = from_of(who)
  if who == 'agent' then join(S, sess, ix.agent) end
  local id = chat_emit(S, 'chat.message', ix.agent or '', {session = S, interaction = ix_id,
                       case = ix.case_id, from = from, name = name, text = text,
                       client_id = cid}, true)
  if ix.case_id then
    history_add(ix.case_id, now, {'type', 'chat.message', 'interaction', ix_id, 'session', S,
                                  'from', from, 'agent', who == 'agent' and ix.agent or '',
                                  'name', name, 'text', text})
  end
  if cid ~= '' then redis.call('SET', ckey, id, 'EX', 86400) end
  touch(S)
  return {id, ix_id, 0}
elseif op == 'typing' then
  local who, auth = ARGV[3], ARGV[4]
  if not allowed(sess, ix, who, auth) then return fail('ERR_FORBIDDEN', 'not your chat') end
  if sess.state ~= 'open' then return 'ended' end
  if redis.call('SET', skey .. ':typing:' .. who, '1', 'NX', 'PX', 1000) then
    local aid = ''
    if who == 'visitor' then aid = ix.agent or '' end
    chat_emit(S, 'chat.typing', aid, {session = S, interaction = ix_id, from = from_of(who)}, false)
  end
  return 'ok'
elseif op == 'close' then
  local who, auth = ARGV[3], ARGV[4]
  if not allowed(sess, ix, who, auth) then return fail('ERR_FORBIDDEN', 'not your chat') end
  if sess.state ~= 'open' then return {'ended', ix_id, ix.state or ''} end
  end_chat(S, sess, ix_id, ix, from_of(who), 'closed')
  return {'ok', ix_id, ix.state or ''}
elseif op == 'connect' then
  if sess.visitor ~= ARGV[3] then return fail('ERR_FORBIDDEN', 'not your chat') end
  redis.call('HINCRBY', skey, 'streams', 1)
  if sess.away == '1' then
    redis.call('HSET', skey, 'away', '0')
    if sess.state == 'open' and (ix.agent or '') ~= '' then
      chat_emit(S, 'chat.customer_back', ix.agent, {session = S, interaction = ix_id}, false)
    end
  end
  return {ix_id, ix.state or '', sess.state}
elseif op == 'gone' then
  local n = redis.call('HINCRBY', skey, 'streams', -1)
  if n > 0 then return {'here', ix_id} end
  if n < 0 then redis.call('HSET', skey, 'streams', 0) end
  if sess.state ~= 'open' then return {'ended', ix_id} end
  if ix.state == 'queued' or ix.state == 'offered' then
    end_chat(S, sess, ix_id, ix, 'customer', 'left')
    return {'abandon', ix_id}
  end
  if ix.state == 'assigned' then
    redis.call('HSET', skey, 'away', '1')
    chat_emit(S, 'chat.customer_away', ix.agent, {session = S, interaction = ix_id}, false)
  end
  return {'away', ix_id}
elseif op == 'messages' then
  local who, auth = ARGV[3], ARGV[4]
  if not allowed(sess, ix, who, auth) then return fail('ERR_FORBIDDEN', 'not your chat') end
  local out = {}
  for _, e in ipairs(redis.call('XRANGE', skey .. ':events', '-', '+', 'COUNT', 2000)) do
    local f = hash_to_table(e[2])
    out[#out + 1] = {id = e[1], type = f.type, at = tonumber(f.at), data = cjson.decode(f.data)}
  end
  return cjson.encode({session = S, state = sess.state, interaction = ix_id, topic = sess.topic,
                       name = sess.name, agent_name = sess.agent_name, events = out})
end
return fail('ERR_INVALID', 'unknown operation')
