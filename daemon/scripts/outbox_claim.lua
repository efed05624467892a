-- outbox_claim.lua: work for one daemon's SMTP workers (channels/email_smtp.c), in one call:
-- retries that are due go back on the stream; entries another daemon took and has not
-- finished for ARGV[3] ms (it died: a live one refreshes its claims) are taken over with
-- XAUTOCLAIM; then new entries. ARGV[1] consumer name, ARGV[2] how many at most.
-- Returns {{entry id, job JSON}, ...}.
local key = B .. 'outbox:email'
local consumer, count, idle = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now = now_ms()
redis.pcall('XGROUP', 'CREATE', key, 'senders', '0', 'MKSTREAM')
for _, j in ipairs(redis.call('ZRANGEBYSCORE', key .. ':retry', '-inf', now, 'LIMIT', 0, 100)) do
  redis.call('XADD', key, '*', 'job', j)
  redis.call('ZREM', key .. ':retry', j)
end
local out = {}
local function take(entries)
  for _, e in ipairs(entries or {}) do
    if type(e) == 'table' and type(e[2]) == 'table' then
      local f = hash_to_table(e[2])
      if f.job then out[#out + 1] = {e[1], f.job} end
    end
  end
end
if count <= 0 then return out end
local claimed = redis.call('XAUTOCLAIM', key, 'senders', consumer, idle, '0-0', 'COUNT', count)
take(claimed[2])
if #out < count then
  local r = redis.call('XREADGROUP', 'GROUP', 'senders', consumer, 'COUNT', count - #out,
                       'STREAMS', key, '>')
  if r then take(r[1][2]) end
end
return out
