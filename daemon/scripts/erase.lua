-- erase.lua: data rights (docs/API.md "Data rights"). ARGV[1] op:
--   'erase', customer, reason, actor: removes or pseudonymises the person's data everywhere
--     it lives (identifiers and their index entries, profile, segment history, conflicts,
--     case policy numbers, texts of interactions and history entries, chat transcripts),
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

-- cases, their history and interactions: texts out, ids and timings kept (reports stay)
local TEXT = {from = 1, to = 1, cc = 1, summary = 1, text = 1, note = 1, reason = 1, subject = 1, body = 1, name = 1}
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
      redis.call('HDEL', ik, 'from', 'to', 'subject', 'body', 'name', 'metadata')
      redis.call('HSET', ik, 'erased_at', now)
    end
  end
end
audit('customer.erase', cid, reason)
local out = {'ok'}
for _, s in ipairs(shas) do out[#out + 1] = s end
return out
