-- email_reply.lua: queue one outbound email on the case of an inbound email interaction.
-- ARGV[1] interaction id, ARGV[2] token sha ('' = admin), ARGV[3] JSON {mode = 'agent' |
-- 'ack' | 'transcript', body, cc (mode agent: addresses to copy), client_id (mode agent: a
-- retry with it gets the message already queued), attachments = [{sha256, filename, content_type}], message_id
-- (made by the daemon), ack_rate (seconds, mode ack)}. The message is built from the interaction: To is
-- its Reply-To or From, From the mailbox it came in through, In-Reply-To its Message-ID,
-- References its References plus that id, the subject "Re: ..." with the case token.
-- Writes msgid:<id> -> case (so the customer's answer threads), msgout:<id> (the delivery
-- state), the job on the outbox stream (email_smtp.c sends it), and the case history.
-- Returns {message_id, stream entry id}, {message_id, 'duplicate'} for a retried client_id, or
-- {'', reason} when an acknowledgement is skipped.
-- Mode 'transcript' (a web chat interaction; session, from, from_name): the chat's messages
-- to the visitor's email, once per session, never to an automatic address.
local ix_id, sha = ARGV[1], ARGV[2]
local a = cjson.decode(ARGV[3])
local now = now_ms()
local ikey = B .. 'ix:' .. ix_id
local ix = hash_to_table(redis.call('HGETALL', ikey))
if not ix.id then return fail('ERR_NOT_FOUND', 'no interaction ' .. ix_id) end

if a.mode == 'transcript' then
  -- the end of a web chat: its transcript to the visitor's email, once per session, never
  -- to an automatic address (the visitor's close was checked by chat.lua just before)
  if ix.channel ~= 'webchat' or ix.external_id ~= a.session then
    return fail('ERR_INVALID', ix_id .. ' is not that web chat')
  end
  local S = a.session
  local skey = B .. 'chat:' .. S
  local to = ''
  if string.find(ix.from or '', '@', 1, true) then to = ix.from end
  if to == '' and ix.customer_id then
    local ids = redis.call('SMEMBERS', B .. 'cust:' .. resolve_customer(ix.customer_id) .. ':ids')
    table.sort(ids)
    for _, m in ipairs(ids) do
      local v = string.match(m, '^email:(.+@.+)$')
      if v then to = v break end
    end
  end
  if to == '' then return {'', 'no_email'} end
  local lp = string.lower(string.match(to, '^([^@]*)@') or '')
  local auto = {['mailer-daemon'] = true, ['mailer_daemon'] = true, ['mail-daemon'] = true,
                maildaemon = true, postmaster = true, noreply = true, ['no-reply'] = true,
                ['no_reply'] = true, donotreply = true, ['do-not-reply'] = true,
                ['do_not_reply'] = true, bounce = true, bounces = true}
  if auto[lp] or string.find(lp, '^noreply') or string.find(lp, '^no%-reply') then
    return {'', 'automatic'}
  end
  if (a.from or '') == '' then
    return fail('ERR_INVALID', 'no From address: set [email] from_address')
  end
  local mid = a.message_id
  if redis.call('HSETNX', skey, 'transcript', mid) == 0 then return {'', 'already_sent'} end
  local lines = {}
  for _, e in ipairs(redis.call('XRANGE', skey .. ':events', '-', '+', 'COUNT', 2000)) do
    local f = hash_to_table(e[2])
    if f.type == 'chat.message' then
      local d = cjson.decode(f.data)
      local at = tonumber(f.at) or 0
      local secs = math.floor(at / 1000)
      local sod = secs % 86400
      local days = math.floor(secs / 86400)
      -- civil date from days since 1970-01-01 (UTC)
      local z = days + 719468
      local era = math.floor(z / 146097)
      local doe = z - era * 146097
      local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
      local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
      local mp = math.floor((5 * doy + 2) / 153)
      local dd = doy - math.floor((153 * mp + 2) / 5) + 1
      local mm = mp < 10 and mp + 3 or mp - 9
      local yy = yoe + era * 400 + (mm <= 2 and 1 or 0)
      local who = d.name or (d.from == 'agent' and 'Agent' or 'You')
      if d.from ~= 'agent' then who = who .. ' (you)' end
      lines[#lines + 1] = string.format('[%04d-%02d-%02d %02d:%02d:%02d UTC] %s: %s', yy, mm, dd,
        math.floor(sod / 3600), math.floor(sod / 60) % 60, sod % 60, who, d.text or '')
    end
  end
  if #lines == 0 then lines[1] = '(no messages)' end
  local case_id = ix.case_id
  local body = 'Transcript of your web chat (' .. (ix.subject or 'Web chat') .. ', case ' .. case_id .. '):\n\n' ..
               table.concat(lines, '\n') .. '\n'
  local subject = 'Your chat transcript [#' .. case_id .. ']'
  local job = {id = mid, kind = 'transcript', from = a.from, from_name = a.from_name or '',
               to = to, subject = subject, body = body, in_reply_to = '', references = {},
               attachments = {}, case = case_id, interaction = ix_id, attempt = 1, created_at = now}
  redis.call('SET', B .. 'msgid:' .. mid, case_id)
  redis.call('HSET', B .. 'msgout:' .. mid, 'case', case_id, 'interaction', ix_id, 'to', to,
             'status', 'queued', 'kind', 'transcript', 'created_at', now, 'attempts', 0)
  local entry = redis.call('XADD', B .. 'outbox:email', '*', 'job', cjson.encode(job))
redis.call('HSET', B .. 'msgout:' .. mid, 'entry', entry) -- erase.lua withdraws it unsent
  history_add(case_id, now, {'type', 'email.queued', 'interaction', ix_id, 'message_id', mid,
                             'to', to, 'subject', subject, 'by', 'auto', 'text', 'chat transcript'})
  emit(now, 'email.queued', nil, {interaction = ix_id, case = case_id, message_id = mid})
  return {mid, entry}
end
if ix.channel ~= 'email' then return fail('ERR_INVALID', ix_id .. ' is not an email interaction') end
local meta = {}
if ix.metadata and ix.metadata ~= '' then meta = cjson.decode(ix.metadata) end

local retry_key = nil
if a.mode == 'agent' then
  -- the agent holding the interaction, or an admin
  if sha ~= '' and not (ix.agent and agent_authorised(ix.agent, sha)) then
    return fail('ERR_FORBIDDEN', 'not your interaction')
  end
  -- the same client_id again (a retry whose answer was lost): the message already queued
  if type(a.client_id) == 'string' and a.client_id ~= '' then
    retry_key = B .. 'replyid:' .. ix_id .. ':' .. a.client_id
    local queued = redis.call('GET', retry_key)
    if queued then return {queued, 'duplicate'} end
  end
else
  -- an automatic acknowledgement: never to automatic mail, only for a case this message
  -- opened, at most one per sender per ack_rate seconds
  if meta.auto_submitted or meta.bulk or meta.from_daemon then return {'', 'automatic'} end
  local c = redis.call('HMGET', B .. 'case:' .. ix.case_id, 'created_at')
  if tostring(c[1]) ~= tostring(ix.created_at) then return {'', 'existing_case'} end
end

local to = ix.from or ''
if type(meta.reply_to) == 'table' and type(meta.reply_to[1]) == 'string' then to = meta.reply_to[1] end
if to == '' then return fail('ERR_INVALID', 'the message has no address to reply to') end
if type(meta.reply_from) ~= 'string' or meta.reply_from == '' then
  return fail('ERR_INVALID', 'no From address: set [mailbox] address or [email] from_address')
end
if a.mode ~= 'agent' then
  local rl = redis.call('SET', B .. 'ackrl:' .. string.lower(to), now, 'NX', 'EX', tonumber(a.ack_rate) or 86400)
  if not rl then return {'', 'rate_limited'} end
end

local case_id = ix.case_id
local token = '[#' .. case_id .. ']'
local base = ix.subject or ''
local reply_prefix = {re = true, aw = true, sv = true, antw = true, r = true, rif = true}
for _ = 1, 3 do
  local p, rest = string.match(base, '^%s*(%a+)%s*:%s*(.*)$')
  if not p or not reply_prefix[string.lower(p)] then break end
  base = rest
end
local subject = 'Re: ' .. base
if not string.find(subject, token, 1, true) then subject = subject .. ' ' .. token end

local refs = {}
if type(meta.references) == 'table' then
  for _, r in ipairs(meta.references) do refs[#refs + 1] = r end
end
if type(meta.message_id) == 'string' then refs[#refs + 1] = meta.message_id end
while #refs > 20 do table.remove(refs, 1) end

local mid = a.message_id
-- copies (the agent's Cc, addresses checked by the daemon); never for an acknowledgement
local cc = {}
if a.mode == 'agent' and type(a.cc) == 'table' then
  for _, c in ipairs(a.cc) do
    if type(c) == 'string' and c ~= '' and string.lower(c) ~= string.lower(to) then cc[#cc + 1] = c end
  end
end
local job = {id = mid, kind = a.mode, from = meta.reply_from, from_name = meta.reply_from_name or '',
             to = to, subject = subject, body = a.body or '', in_reply_to = meta.message_id or '',
             references = refs, attachments = a.attachments or {}, case = case_id,
             interaction = ix_id, attempt = 1, created_at = now}
if #cc > 0 then job.cc = cc end
local text = cjson.encode(job)
redis.call('SET', B .. 'msgid:' .. mid, case_id)
redis.call('HSET', B .. 'msgout:' .. mid, 'case', case_id, 'interaction', ix_id, 'to', to,
           'status', 'queued', 'kind', a.mode, 'created_at', now, 'attempts', 0)
local entry = redis.call('XADD', B .. 'outbox:email', '*', 'job', text)
redis.call('HSET', B .. 'msgout:' .. mid, 'entry', entry) -- erase.lua withdraws it unsent
if retry_key then redis.call('SET', retry_key, mid, 'EX', 7 * 86400) end
local hist = {'type', 'email.queued', 'interaction', ix_id, 'message_id', mid,
              'to', to, 'subject', subject, 'by', a.mode == 'agent' and (ix.agent or 'admin') or 'auto',
              'text', string.sub(a.body or '', 1, 4000)}
if #cc > 0 then
  hist[#hist + 1] = 'cc'
  hist[#hist + 1] = table.concat(cc, ', ')
end
history_add(case_id, now, hist)
-- the holding agent's stream too: the desktop shows the delivery state live
emit(now, 'email.queued', ix.agent, {interaction = ix_id, case = case_id, message_id = mid})
return {mid, entry}
