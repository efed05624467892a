-- erase.lua: data rights (docs/API.md "Data rights"). ARGV[1] op:
--   'erase', customer, reason, actor: removes or pseudonymises the person's data everywhere
--     it lives (identifiers and their index entries, profile, segment history, conflicts,
--     case policy numbers, texts of interactions and history entries, chat transcripts, OCR
--     text, the email and fax channels' keys and outbox jobs not yet sent: see below),
--     refused while one of the customer's cases is under legal hold. Cost: the customer's
--     own data. Returns {'ok', sha256 of referenced attachments...} (the daemon deletes the
--     files).
--   'hold', case, reason, actor / 'unhold', case, '', actor: set or lift a legal hold.
-- Every operation is recorded in the append-only audit stream.
local op, id, reason, actor = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = now_ms()
local function audit(action, object, detail)
  redis.call('XADD', B .. 'audit', '*', 'at', tostring(now), 'action', action, 'object', object,
             'actor', actor, 'detail', detail or '')
end

if op == 'hold' or op == 'unhold' then
  local k = B .. 'case:' .. id
  if redis.call('EXISTS', k) == 0 then return fail('ERR_NOT_FOUND', 'no case ' .. id) end
  if op == 'hold' then
    redis.call('HSET', k, 'legal_hold', reason, 'legal_hold_at', now, 'legal_hold_by', actor)
  else
    redis.call('HDEL', k, 'legal_hold', 'legal_hold_at', 'legal_hold_by')
  end
  audit('case.' .. op, id, reason)
  return {'ok'}
end
if op ~= 'erase' then return fail('ERR_INVALID', 'unknown operation') end

if redis.call('EXISTS', B .. 'cust:' .. id) == 0 then return fail('ERR_NOT_FOUND', 'no customer ' .. id) end
local cid = resolve_customer(id)
local ck = B .. 'cust:' .. cid
local cases = redis.call('ZRANGE', ck .. ':cases', 0, -1)
for _, c in ipairs(cases) do
  local h = redis.call('HGET', B .. 'case:' .. c, 'legal_hold')
  if h and h ~= '' then
    audit('customer.erase.refused', cid, 'case ' .. c .. ' under legal hold: ' .. h)
    return fail('ERR_CONFLICT', 'case ' .. c .. ' is under legal hold: ' .. h)
  end
end

-- identifiers and their index entries (only those still pointing here)
local persons = {cid}
for _, m in ipairs(redis.call('LRANGE', ck .. ':merges', 0, -1)) do
  local ok, d = pcall(cjson.decode, m)
  if ok and type(d) == 'table' and d.from then persons[#persons + 1] = tostring(d.from) end
end
for _, p in ipairs(persons) do
  local pk = B .. 'cust:' .. p
  -- conflict records are kept on both customers: the other side's copy names this person's
  -- identifiers; it is replaced by one without them
  for _, raw in ipairs(redis.call('LRANGE', pk .. ':conflicts', 0, -1)) do
    local ok, c = pcall(cjson.decode, raw)
    if ok and type(c) == 'table' then
      local other = (c.customer == p) and c.other_customer or c.customer
      if other and other ~= p then
        local ok_key = B .. 'cust:' .. tostring(other) .. ':conflicts'
        if redis.call('LREM', ok_key, 0, raw) > 0 then
          if c.customer == p then c.matched = nil else c.other_matched = nil end
          c.erased = true
          redis.call('RPUSH', ok_key, cjson.encode(c))
        end
      end
    end
  end
  for _, m in ipairs(redis.call('SMEMBERS', pk .. ':ids')) do
    local ik = B .. 'idx:' .. m
    local owner = redis.call('GET', ik)
    if owner == p or owner == cid then redis.call('DEL', ik) end
  end
  redis.call('DEL', pk .. ':ids', pk .. ':conflicts', pk .. ':segments', pk .. ':open', pk .. ':access')
  if p ~= cid then
    redis.call('DEL', pk)
    redis.call('HSET', pk, 'id', p, 'merged_into', cid, 'erased_at', now)
  end
end
redis.call('DEL', ck)
redis.call('HSET', ck, 'id', cid, 'erased_at', now, 'segment', 'standard')

-- cases, their history and interactions: texts out, ids and timings kept (reports stay).
-- Besides the texts: what a server or the OCR said (an SMTP answer or a DSN names the
-- address; OCR finds numbers), and the email and fax channels' keys that name or point at
-- the person (below).
local TEXT = {from = 1, to = 1, cc = 1, summary = 1, text = 1, note = 1, reason = 1, subject = 1, body = 1, name = 1,
              smtp = 1, recipient = 1, diagnostic = 1, error = 1, found = 1, matched = 1, failure = 1,
              tsi = 1}

-- Email (channels/email_*.c, email_reply.lua, ingest.lua): msgid:<Message-ID> (threading:
-- the message's id -> case), msgout:<id> (an outbound message: its recipient, the SMTP
-- answer), ackrl:<address> (the acknowledgement rate limit, keyed by the address itself),
-- idem:email:<Message-ID> (ingest's idempotency key, named by a Message-ID that may carry
-- the sender's name or host); a message not yet sent is withdrawn from outbox:email (its
-- entry, or its retry job). Fax (fax.lua): faxout:<FX-n> (an outbound fax: the number it
-- goes to), faxprov:<provider>:<id> -> FX-n, the job on outbox:fax if not yet sent, and
-- idem:fax:email:<Message-ID> of fax-to-email. Providers' own fax ids (idem:fax:phaxio:...)
-- name nobody and stay, so a provider's retry remains a duplicate.
local function forget_address(addr)
  if type(addr) == 'string' and string.find(addr, '@', 1, true) then
    redis.call('DEL', B .. 'ackrl:' .. string.lower(addr))
  end
end
local mids_out = {}
local function forget_outbound_mail(mid)
  if mids_out[mid] then return end
  mids_out[mid] = true
  local ok = B .. 'msgout:' .. mid
  local entry = redis.call('HGET', ok, 'entry')
  if entry then
    redis.pcall('XACK', B .. 'outbox:email', 'senders', entry)
    redis.call('XDEL', B .. 'outbox:email', entry)
  end
  redis.call('DEL', ok, B .. 'msgid:' .. mid)
end
local fax_out = {}
local function forget_outbound_fax(id)
  if fax_out[id] then return end
  fax_out[id] = true
  local fk = B .. 'faxout:' .. id
  local h = hash_to_table(redis.call('HGETALL', fk))
  if h.entry then
    redis.pcall('XACK', B .. 'outbox:fax', 'senders', h.entry)
    redis.call('XDEL', B .. 'outbox:fax', h.entry)
  end
  if h.provider and h.provider_id then
    redis.call('DEL', B .. 'faxprov:' .. h.provider .. ':' .. h.provider_id)
  end
  redis.call('DEL', fk)
  redis.call('ZREM', B .. 'faxout:open', id)
end
local function forget_interaction_keys(ik, ix)
  local meta = {}
  if ix.metadata and ix.metadata ~= '' then
    local ok, d = pcall(cjson.decode, ix.metadata)
    if ok and type(d) == 'table' then meta = d end
  end
  forget_address(ix.from)
  if type(meta.reply_to) == 'table' then
    for _, r in ipairs(meta.reply_to) do forget_address(r) end
  end
  if type(meta.message_id) == 'string' then redis.call('DEL', B .. 'msgid:' .. meta.message_id) end
  if type(meta.thread) == 'table' and type(meta.thread.msgid) == 'string' then
    redis.call('DEL', B .. 'msgid:' .. meta.thread.msgid)
  end
  local ext = ix.external_id
  if ext and ext ~= '' and (ix.channel == 'email' or (ix.channel == 'fax' and string.sub(ext, 1, 6) == 'email:')) then
    redis.call('DEL', B .. 'idem:' .. ix.channel .. ':' .. ext)
    redis.call('HSET', ik, 'external_id', 'erased:' .. redis.sha1hex(ext))
  end
  redis.call('HDEL', ik, 'ocr_text', 'ocr_found', 'ocr_matched', 'linked_match', 'fax_failure')
end
local shas, seen_sha = {}, {}
local function collect_shas(s)
  for h in string.gmatch(s or '', '%x+') do
    if #h == 64 and not seen_sha[h] then seen_sha[h] = true; shas[#shas + 1] = string.lower(h) end
  end
end
for _, c in ipairs(cases) do
  local kk = B .. 'case:' .. c
  redis.call('HSET', kk, 'policy', '')
  local hk = kk .. ':hist'
  local entries = redis.call('XRANGE', hk, '-', '+')
  redis.call('DEL', hk)
  local seen = {}
  for _, e in ipairs(entries) do
    local f = e[2]
    local args = {hk, e[1]}
    local ixid
    for i = 1, #f, 2 do
      args[#args + 1] = f[i]
      if TEXT[f[i]] and f[i + 1] ~= '' then args[#args + 1] = '[erased]' else args[#args + 1] = f[i + 1] end
      if f[i] == 'interaction' then ixid = f[i + 1] end
      if f[i] == 'message_id' and f[i + 1] ~= '' then forget_outbound_mail(f[i + 1]) end
      if f[i] == 'fax' and string.sub(f[i + 1], 1, 3) == 'FX-' then forget_outbound_fax(f[i + 1]) end
    end
    redis.call('XADD', unpack(args))
    if ixid and not seen[ixid] then
      seen[ixid] = true
      local ik = B .. 'ix:' .. ixid
      local ix = hash_to_table(redis.call('HGETALL', ik))
      collect_shas(ix.metadata)
      collect_shas(ix.body)
      if ix.channel == 'webchat' and ix.external_id then
        local sk = B .. 'chat:' .. ix.external_id
        for _, m in ipairs(redis.call('XRANGE', sk .. ':events', '-', '+')) do
          for i = 1, #m[2], 2 do collect_shas(m[2][i + 1]) end
        end
        redis.call('DEL', sk, sk .. ':events')
      end
      forget_interaction_keys(ik, ix)
      redis.call('HDEL', ik, 'from', 'to', 'subject', 'body', 'name', 'metadata')
      redis.call('HSET', ik, 'erased_at', now)
    end
  end
end
-- email jobs waiting for a retry: the set holds each job itself (bounded by the relay's
-- backlog, not by the history)
if next(mids_out) then
  local rk = B .. 'outbox:email:retry'
  for _, j in ipairs(redis.call('ZRANGE', rk, 0, -1)) do
    local ok, job = pcall(cjson.decode, j)
    if ok and type(job) == 'table' and mids_out[job.id] then redis.call('ZREM', rk, j) end
  end
end
audit('customer.erase', cid, reason)
local out = {'ok'}
for _, s in ipairs(shas) do out[#out + 1] = s end
return out
