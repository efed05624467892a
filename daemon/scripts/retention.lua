-- retention.lua: one bounded run of the retention job (docs/ANALYTICS.md, "Retention").
-- ARGV[1] JSON {channel = cutoff_ms}, ARGV[2] at most this many interactions in this run.
-- For each interaction of that channel that arrived before the cutoff (ret:<channel>,
-- written at ingest): its content goes (from, to, subject, body, name, metadata; the web
-- chat transcript; the texts of its case history entries, rewritten with the same ids);
-- ids, states, times and report figures stay. Returns {processed, sha256 of attachments
-- it referenced...} (the daemon deletes those files).
local cut = cjson.decode(ARGV[1])
local max = tonumber(ARGV[2])
local now = now_ms()
local done, shas, seen_sha = 0, {}, {}
local TEXT = {from = 1, to = 1, cc = 1, summary = 1, text = 1, note = 1, reason = 1, subject = 1, body = 1, name = 1}
local function collect(s)
  for h in string.gmatch(s or '', '%x+') do
    if #h == 64 and not seen_sha[h] then seen_sha[h] = true; shas[#shas + 1] = string.lower(h) end
  end
end
for ch, cutoff in pairs(cut) do
  local zk = B .. 'ret:' .. ch
  local ids = redis.call('ZRANGEBYSCORE', zk, '-inf', '(' .. tostring(cutoff), 'LIMIT', 0, max - done)
  for _, id in ipairs(ids) do
    redis.call('ZREM', zk, id)
    local ik = B .. 'ix:' .. id
    local ix = hash_to_table(redis.call('HGETALL', ik))
    if ix.id then
      collect(ix.metadata); collect(ix.body)
      if ix.channel == 'webchat' and ix.external_id then
        local sk = B .. 'chat:' .. ix.external_id
        for _, m in ipairs(redis.call('XRANGE', sk .. ':events', '-', '+')) do
          for i = 2, #m[2], 2 do collect(m[2][i]) end
        end
        redis.call('DEL', sk, sk .. ':events')
      end
      redis.call('HDEL', ik, 'from', 'to', 'subject', 'body', 'name', 'metadata')
      redis.call('HSET', ik, 'expired_at', now)
      -- the case history keeps its entries and ids; this interaction's texts go
      local hk = B .. 'case:' .. (ix.case_id or '') .. ':hist'
      local entries = redis.call('XRANGE', hk, '-', '+')
      local touched = false
      for _, e in ipairs(entries) do
        local f = hash_to_table(e[2])
        if f.interaction == id then
          for k in pairs(TEXT) do if f[k] and f[k] ~= '' then touched = true end end
        end
      end
      if touched then
        redis.call('DEL', hk)
        for _, e in ipairs(entries) do
          local f, args = e[2], {hk, e[1]}
          local mine = hash_to_table(f).interaction == id
          for i = 1, #f, 2 do
            args[#args + 1] = f[i]
            if mine and TEXT[f[i]] and f[i + 1] ~= '' then args[#args + 1] = '[expired]'
            else args[#args + 1] = f[i + 1] end
          end
          redis.call('XADD', unpack(args))
        end
      end
    end
    done = done + 1
  end
  if done >= max then break end
end
local out = {done}
for _, s in ipairs(shas) do out[#out + 1] = s end
return out
