-- outbox_result.lua: what the SMTP relay said about one outbox entry, applied once.
-- ARGV[1] entry id, ARGV[2] sent | retry | failed, ARGV[3] the job JSON, ARGV[4] SMTP code,
-- ARGV[5] server text, ARGV[6] retry delay ms. The entry is acknowledged (XACK) here and only
-- here: after the server's 250 (sent), when a retry is scheduled (a new job on the retry
-- set), or after a permanent failure (recorded on the case). An entry already acknowledged
-- by another daemon that took it over changes nothing ('stale').
local key = B .. 'outbox:email'
local id, outcome, code, text = ARGV[1], ARGV[2], ARGV[4], ARGV[5]
if redis.call('XACK', key, 'senders', id) == 0 then return 'stale' end
redis.call('XDEL', key, id)
local job = cjson.decode(ARGV[3])
local now = now_ms()
local out = B .. 'msgout:' .. job.id
local smtp = code .. ' ' .. text
-- the agent holding the interaction sees the delivery state on its own stream
local holder = nil
if job.interaction and job.interaction ~= '' then
  holder = redis.call('HGET', B .. 'ix:' .. job.interaction, 'agent') or nil
end
if outcome == 'sent' then
  redis.call('HSET', out, 'status', 'sent', 'sent_at', now, 'smtp', smtp, 'attempts', job.attempt or 1)
  history_add(job.case, now, {'type', 'email.sent', 'interaction', job.interaction or '',
                              'message_id', job.id, 'to', job.to, 'smtp', smtp})
  emit(now, 'email.sent', holder, {case = job.case, interaction = job.interaction, message_id = job.id})
elseif outcome == 'retry' then
  local attempt = (tonumber(job.attempt) or 1) + 1
  job.attempt = attempt
  job.last_error = smtp
  redis.call('ZADD', key .. ':retry', now + tonumber(ARGV[6]), cjson.encode(job))
  redis.call('HSET', out, 'status', 'deferred', 'smtp', smtp, 'attempts', attempt - 1)
  history_add(job.case, now, {'type', 'email.deferred', 'interaction', job.interaction or '',
                              'message_id', job.id, 'to', job.to, 'smtp', smtp,
                              'retry_in_ms', ARGV[6]})
  emit(now, 'email.deferred', holder, {case = job.case, interaction = job.interaction,
                                       message_id = job.id, smtp = smtp})
else
  redis.call('HSET', out, 'status', 'failed', 'failed_at', now, 'smtp', smtp, 'attempts', job.attempt or 1)
  history_add(job.case, now, {'type', 'email.failed', 'interaction', job.interaction or '',
                              'message_id', job.id, 'to', job.to, 'smtp', smtp})
  emit(now, 'email.failed', holder, {case = job.case, interaction = job.interaction, message_id = job.id,
                                  smtp = smtp})
end
return outcome
