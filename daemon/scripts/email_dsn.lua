-- email_dsn.lua: a delivery status notification (RFC 3464) about a message omnicc sent.
-- ARGV[1] JSON {dsn_id, original (Message-ID of the reported message), action, status,
-- recipient, diagnostic}. Recorded on the case of the original message and on its delivery
-- state (msgout:<id>); never an interaction, never a case. Each DSN counts once (a re-read
-- after a crash finds it seen). Returns {'matched', case} | {'unknown', ''} | {'duplicate', ''}.
local d = cjson.decode(ARGV[1])
local now = now_ms()
if type(d.dsn_id) == 'string' and d.dsn_id ~= '' and
   not redis.call('SET', B .. 'dsnseen:' .. d.dsn_id, now, 'NX', 'EX', 30 * 86400) then
  return {'duplicate', ''}
end
if type(d.original) ~= 'string' or d.original == '' then return {'unknown', ''} end
local out = B .. 'msgout:' .. d.original
local o = hash_to_table(redis.call('HGETALL', out))
if not o.case then return {'unknown', ''} end
local action = d.action or ''
local etype = 'email.dsn'
if action == 'failed' then
  etype = 'email.bounced'
  redis.call('HSET', out, 'status', 'bounced', 'bounced_at', now, 'dsn_status', d.status or '',
             'dsn_diagnostic', d.diagnostic or '')
elseif action == 'delayed' then
  etype = 'email.delayed'
end
history_add(o.case, now, {'type', etype, 'interaction', o.interaction or '', 'message_id', d.original,
                          'recipient', d.recipient or '', 'action', action, 'status', d.status or '',
                          'diagnostic', d.diagnostic or ''})
-- no recipient in the live events stream: it is an address (the case history has it)
emit(now, etype, nil, {case = o.case, message_id = d.original, status = d.status})
return {'matched', o.case}
