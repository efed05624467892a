-- case_update.lua: ARGV[1] case id, ARGV[2] close|reopen|note, ARGV[3] text, ARGV[4] author.
local case_id, action, text, author = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = B .. 'case:' .. case_id
local now = now_ms()
local c = redis.call('HMGET', key, 'status', 'customer_id', 'policy')
if not c[1] then return fail('ERR_NOT_FOUND', 'no case ' .. case_id) end
local status, owner, policy = c[1], c[2], c[3] or ''
local openkey = B .. 'cust:' .. owner .. ':open'
local hid
if action == 'close' then
  if status == 'closed' then return {case_id, 'closed', ''} end
  redis.call('HSET', key, 'status', 'closed', 'closed_at', now, 'updated_at', now)
  if redis.call('HGET', openkey, policy) == case_id then redis.call('HDEL', openkey, policy) end
  hid = history_add(case_id, now, {'type', 'case.closed', 'by', author, 'reason', text})
  status = 'closed'
elseif action == 'reopen' then
  if status == 'open' then return {case_id, 'open', ''} end
  redis.call('HSET', key, 'status', 'open', 'updated_at', now)
  redis.call('HDEL', key, 'closed_at')
  local cur = redis.call('HGET', openkey, policy)
  if not cur or redis.call('HGET', B .. 'case:' .. cur, 'status') ~= 'open' then
    redis.call('HSET', openkey, policy, case_id)
  end
  hid = history_add(case_id, now, {'type', 'case.reopened', 'by', author, 'reason', text})
  status = 'open'
elseif action == 'note' then
  redis.call('HSET', key, 'updated_at', now)
  hid = history_add(case_id, now, {'type', 'note', 'by', author, 'text', text})
else
  return fail('ERR_INVALID', 'unknown action')
end
emit(now, 'case.' .. action, nil, {case = case_id, customer = owner, status = status})
return {case_id, status, hid}
