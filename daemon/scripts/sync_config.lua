-- sync_config.lua: the daemon's queue and routing configuration, written at connect so that
-- every script reads it in O(1). ARGV[1]: {routing = {...}, queues = [{name, channels,
-- strategy, sticky_seconds, overflow_after, overflow_target, max_wait, on_max_wait,
-- sla_seconds}]}. Instances sharing one Redis must run the same configuration.
local c = cjson.decode(ARGV[1])
local rk = B .. 'routing:conf'
redis.call('DEL', rk)
for k, v in pairs(c.routing) do redis.call('HSET', rk, k, v) end
for _, q in ipairs(c.queues) do
  local key = B .. 'queue:' .. q.name
  redis.call('DEL', key)
  for k, v in pairs(q) do redis.call('HSET', key, k, tostring(v)) end
  redis.call('SADD', B .. 'queues', q.name)
end
return #c.queues
