-- voice.lua: the phone channel's call state next to the interaction (channels/voice*.c).
-- ARGV[1] op, ARGV[2] the provider's call id (Twilio CallSid, PBX call id: the interaction's
-- external_id), ARGV[3] the interaction id or '' (then found through the ingest's
-- idempotency key), ARGV[4] JSON arguments. Replies are JSON text.
--   poll      {ivr?, connect?, leg?}: where the call stands (state, queue position, estimated
--             wait, agent and softphone once assigned); records the IVR path once and, with
--             connect, that the caller is being put through to the agent
--   status    {status, leg?, duration?, agent?, cause?, recording_*?}: records a status once
--             per leg; a final one writes the call summary; says whether the caller
--             abandoned (the daemon then runs work.lua 'abandon', which withdraws any offer)
--   dialed    {dial_status, dial_duration?, dial_call_id?, recording_url?}: the agent leg ended
--   callback  {number, caller_id, account}: the waiting caller asked to be called back
--   cb_claim  {limit}: callbacks an agent has accepted, claimed for dialling (a claim is a
--             lease: one whose outcome never comes is claimed again, by any daemon)
--   cb_result {ok, retry?, call_sid?, error?}: the outbound call was placed, or not; with
--             retry (the provider answered 429/5xx or could not be reached) it is dialled
--             again later, up to CALLBACK_ATTEMPTS times
-- Keys: voice:call:<call id> hash, 1 h: status of a call not queued yet (still in the IVR)
--       voice:cb zset: callback interactions waiting for an agent or to be dialled (again),
--       and claimed ones until their lease ends, scored by next check (ms)
-- Interaction fields: voice_ivr, voice_connected_at, voice_agent, voice_talk_s,
--   voice_recording, voice_disposition, voice_st:<leg>:<status>, callback_state
--   (waiting|dialing|dialed|failed), callback_attempts, callback_error, callback_number,
--   callback_caller_id, callback_account, callback_requested_at, callback_call_sid.
local op, call_id, ix_id = ARGV[1], ARGV[2], ARGV[3]
local args = cjson.decode(ARGV[4])
local now = now_ms()

local CALLBACK_LEASE_MS = 120000 -- longer than the REST request may take
local CALLBACK_ATTEMPTS = 6       -- the first and 5 retries, 2 4 8 16 32 s apart
local FINAL = {completed = true, busy = true, ['no-answer'] = true, failed = true, canceled = true}
local WAITING = {queued = true, offered = true}

local function s(v)
  if v == nil or v == false or v == cjson.null then return '' end
  return tostring(v)
end

if op == 'cb_claim' then
  local key = B .. 'voice:cb'
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, tonumber(args.limit) or 50)
  local out = {}
  for _, id in ipairs(due) do
    local h = redis.call('HMGET', B .. 'ix:' .. id, 'state', 'agent', 'callback_state', 'callback_number',
                         'callback_caller_id', 'callback_account', 'external_id')
    -- 'dialing' still in the set is a lease that ran out: the daemon that claimed it died
    -- before it could record the outcome, so another one dials (at least once)
    if h[1] == 'assigned' and (h[3] == 'waiting' or h[3] == 'dialing') then
      redis.call('ZADD', key, now + CALLBACK_LEASE_MS, id)
      redis.call('HSET', B .. 'ix:' .. id, 'callback_state', 'dialing')
      redis.call('HINCRBY', B .. 'ix:' .. id, 'callback_attempts', 1)
      out[#out + 1] = {id = id, agent = s(h[2]), number = s(h[4]), caller_id = s(h[5]),
                       account = s(h[6]), call_id = s(h[7])}
    elseif h[1] and WAITING[h[1]] and h[3] == 'waiting' then
      redis.call('ZADD', key, now + 1000, id)
    else
      redis.call('ZREM', key, id)
    end
  end
  return cjson.encode({claims = out})
end

if ix_id == '' then ix_id = redis.call('GET', B .. 'idem:voice:' .. call_id) or '' end
local ikey = B .. 'ix:' .. ix_id
local ix = {}
if ix_id ~= '' then ix = hash_to_table(redis.call('HGETALL', ikey)) end

local function wait_ms()
  return (tonumber(ix.assigned_at) or now) - (tonumber(ix.created_at) or now)
end

local function connected(agent, leg)
  if ix.voice_connected_at then return end
  redis.call('HSET', ikey, 'voice_connected_at', now, 'voice_agent', agent)
  ix.voice_connected_at = tostring(now)
  history_add(ix.case_id, now, {'type', 'voice.connected', 'interaction', ix.id, 'call', call_id,
                                'agent', agent, 'leg', leg, 'wait_ms', tostring(wait_ms())})
end

local function record_recording(url, sid, duration)
  if url == '' or redis.call('HSETNX', ikey, 'voice_rec:' .. (sid ~= '' and sid or url), now) == 0 then return end
  redis.call('HSET', ikey, 'voice_recording', url)
  ix.voice_recording = url
  history_add(ix.case_id, now, {'type', 'voice.recording', 'interaction', ix.id, 'call', call_id,
                                'url', url, 'duration_s', duration})
end

local function view()
  local v = {id = ix.id, state = ix.state, queue = ix.queue, case_id = ix.case_id,
             customer_id = ix.customer_id, agent = s(ix.agent), callback = s(ix.callback_state),
             max_wait = ix.max_wait_reached ~= nil, end_reason = s(ix.end_reason),
             wait_ms = wait_ms()}
  local qc = qconf(ix.home_queue or ix.queue)
  v.on_max_wait = qc and qc.on_max_wait or 'close'
  if ix.state == 'queued' then
    local rank = redis.call('ZRANK', B .. 'q:' .. ix.queue .. ':wait:' .. ix.channel, ix.id)
    if rank then
      v.position = rank + 1
      local t = redis.call('HMGET', B .. 'q:' .. ix.queue .. ':totals', 'handled', 'handle_sum_ms')
      local a = redis.call('HMGET', queue_agents_key(ix.queue), 'available', 'busy')
      local handled = tonumber(t[1]) or 0
      local staffed = (tonumber(a[1]) or 0) + (tonumber(a[2]) or 0)
      if handled > 0 and staffed > 0 then
        v.estimated_wait_s = math.ceil(v.position * (tonumber(t[2]) / handled) / staffed / 1000)
      end
    end
  end
  if ix.agent and ix.agent ~= '' then
    v.softphone = s(redis.call('HGET', B .. 'agent:' .. ix.agent, 'softphone'))
  end
  local ended = redis.call('HGET', B .. 'voice:call:' .. call_id, 'ended')
  if ended then v.call_ended = ended end
  return v
end

if op == 'poll' then
  if not ix.id then return fail('ERR_NOT_FOUND', 'no call ' .. call_id) end
  if type(args.ivr) == 'table' and not ix.voice_ivr then
    local text = cjson.encode(args.ivr)
    redis.call('HSET', ikey, 'voice_ivr', text)
    ix.voice_ivr = text
    history_add(ix.case_id, now, {'type', 'voice.ivr', 'interaction', ix.id, 'call', call_id,
                                  'path', cjson.encode(args.ivr.path or {}), 'intent', s(args.ivr.intent),
                                  'policy', s(args.ivr.policy)})
  end
  if args.connect and ix.state == 'assigned' then connected(s(ix.agent), s(args.leg)) end
  return cjson.encode(view())
end

if op == 'status' then
  local st = s(args.status)
  local leg = s(args.leg)
  if leg == '' then leg = 'main' end
  if not ix.id then
    -- not queued (yet): remember how the call ended, for a queueing that races the hang-up
    if st ~= '' then
      local ck = B .. 'voice:call:' .. call_id
      redis.call('HSET', ck, 'last_status', st, 'at', now)
      if FINAL[st] then redis.call('HSET', ck, 'ended', st) end
      redis.call('EXPIRE', ck, 3600)
    end
    return cjson.encode({found = false})
  end
  local res = {found = true, id = ix.id, state = ix.state}
  -- a caller who hangs up while waiting abandons, unless a callback was asked for; computed
  -- on every delivery, so a retried webhook completes an abandon that failed before
  res.abandon = FINAL[st] and leg == 'main' and WAITING[ix.state] and s(ix.callback_state) == '' or false
  record_recording(s(args.recording_url), s(args.recording_sid), s(args.recording_duration))
  if st == '' then return cjson.encode(res) end
  if redis.call('HSETNX', ikey, 'voice_st:' .. leg .. ':' .. st, now) == 0 then
    res.duplicate = true
    return cjson.encode(res)
  end
  if st == 'answered' then -- CTI: the agent picked up
    connected(s(args.agent), leg)
    return cjson.encode(res)
  end
  if not FINAL[st] then
    history_add(ix.case_id, now, {'type', 'voice.status', 'interaction', ix.id, 'call', call_id,
                                  'leg', leg, 'status', st})
    return cjson.encode(res)
  end
  local disposition
  if leg ~= 'main' then
    disposition = (st == 'completed' and ix.voice_connected_at) and leg .. '_answered' or leg .. '_' .. st
  elseif WAITING[ix.state] and s(ix.callback_state) ~= '' then
    disposition = 'callback_requested'
  elseif WAITING[ix.state] then
    disposition = 'abandoned'
  elseif ix.voice_connected_at then
    disposition = 'answered'
  else
    disposition = ix.state -- closed at max_wait (canceled), or already ended
  end
  local at = tonumber(ix.voice_connected_at)
  local talk = s(ix.voice_talk_s)
  if talk == '' and at then talk = tostring(math.floor((now - at) / 1000)) end
  history_add(ix.case_id, now, {'type', 'voice.call_ended', 'interaction', ix.id, 'call', call_id,
                                'leg', leg, 'status', st, 'disposition', disposition,
                                'duration_s', s(args.duration), 'wait_ms', tostring(wait_ms()),
                                'talk_s', talk, 'agent', s(ix.voice_agent ~= nil and ix.voice_agent or ix.agent),
                                'recording_url', s(ix.voice_recording), 'ivr', s(ix.voice_ivr),
                                'cause', s(args.cause)})
  if leg == 'main' then redis.call('HSET', ikey, 'voice_disposition', disposition) end
  res.disposition = disposition
  return cjson.encode(res)
end

if not ix.id then return fail('ERR_NOT_FOUND', 'no interaction for call ' .. call_id) end

if op == 'dialed' then
  local ds = s(args.dial_status)
  local res = {id = ix.id, state = ix.state, queue = ix.home_queue or ix.queue}
  if redis.call('HSETNX', ikey, 'voice_dialed:' .. s(args.dial_call_id), now) == 1 then
    if s(args.dial_duration) ~= '' then redis.call('HSET', ikey, 'voice_talk_s', s(args.dial_duration)) end
    history_add(ix.case_id, now, {'type', 'voice.dial_ended', 'interaction', ix.id, 'call', call_id,
                                  'agent', s(ix.agent), 'status', ds, 'talk_s', s(args.dial_duration)})
    record_recording(s(args.recording_url), s(args.recording_sid), s(args.dial_duration))
  end
  -- the agent's phone did not take the call: back in line, in the same place
  res.requeue = (ds == 'busy' or ds == 'no-answer' or ds == 'failed') and ix.state == 'assigned'
  if res.requeue then redis.call('HDEL', ikey, 'voice_connected_at', 'voice_agent') end
  return cjson.encode(res)
end

if op == 'callback' then
  if not WAITING[ix.state] then return cjson.encode({ok = false, state = ix.state}) end
  if s(ix.callback_state) == '' then
    redis.call('HSET', ikey, 'callback_state', 'waiting', 'callback_number', s(args.number),
               'callback_caller_id', s(args.caller_id), 'callback_account', s(args.account),
               'callback_requested_at', now, 'subject', 'Callback: ' .. (ix.subject or 'phone call'))
    local meta = {}
    if ix.metadata then meta = cjson.decode(ix.metadata) end
    meta.callback = {number = s(args.number), requested_at = now}
    redis.call('HSET', ikey, 'metadata', cjson.encode(meta))
    redis.call('ZADD', B .. 'voice:cb', now + 1000, ix.id)
    history_add(ix.case_id, now, {'type', 'voice.callback_requested', 'interaction', ix.id,
                                  'call', call_id, 'number', s(args.number)})
    emit(now, 'voice.callback_requested', ix.agent, {interaction = ix.id, case = ix.case_id,
                                                    number = s(args.number)})
  end
  return cjson.encode({ok = true, state = ix.state})
end

if op == 'cb_result' then
  if ix.callback_state ~= 'dialing' then return cjson.encode({ok = true, stale = true}) end
  local attempts = tonumber(ix.callback_attempts) or 1
  if not args.ok and args.retry and attempts < CALLBACK_ATTEMPTS then
    -- the provider was busy or away (429, 5xx, network): dial again later, same agent
    local delay = 1000 * 2 ^ attempts
    redis.call('HSET', ikey, 'callback_state', 'waiting', 'callback_error', s(args.error))
    redis.call('ZADD', B .. 'voice:cb', now + delay, ix.id)
    emit(now, 'voice.callback_retry', ix.agent, {interaction = ix.id, agent = ix.agent,
                                                number = s(ix.callback_number), error = s(args.error),
                                                attempt = attempts, next_in_ms = delay})
    return cjson.encode({ok = true, retry_in_ms = delay})
  end
  redis.call('ZREM', B .. 'voice:cb', ix.id)
  if args.ok then
    redis.call('HSET', ikey, 'callback_state', 'dialed', 'callback_call_sid', s(args.call_sid))
    history_add(ix.case_id, now, {'type', 'voice.callback_dialed', 'interaction', ix.id,
                                  'agent', s(ix.agent), 'number', s(ix.callback_number),
                                  'call', s(args.call_sid)})
    emit(now, 'voice.callback_dialing', ix.agent, {interaction = ix.id, agent = ix.agent,
                                                  number = s(ix.callback_number), call = s(args.call_sid)})
  else
    redis.call('HSET', ikey, 'callback_state', 'failed')
    history_add(ix.case_id, now, {'type', 'voice.callback_failed', 'interaction', ix.id,
                                  'agent', s(ix.agent), 'number', s(ix.callback_number),
                                  'error', s(args.error)})
    emit(now, 'voice.callback_failed', ix.agent, {interaction = ix.id, agent = ix.agent,
                                                 number = s(ix.callback_number), error = s(args.error)})
  end
  return cjson.encode({ok = true})
end

return fail('ERR_INVALID', 'unknown voice operation ' .. op)
