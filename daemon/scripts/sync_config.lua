-- sync_config.lua: the daemon's queue and routing configuration, written at connect so that
-- every script reads it in O(1). ARGV[1]: {routing = {...}, queues = [{name, channels,
-- strategy, sticky_seconds, overflow_after, overflow_target, max_wait, on_max_wait,
-- sla_seconds}]}. Instances sharing one Redis must run the same configuration.
local c = cjson.decode(ARGV[1])
-- a data set with no agents has none to put in routing pools (sweep.lua's walk): done
if redis.call('EXISTS', B .. 'pools:migrated') == 0 and redis.call('ZCARD', B .. 'agents') == 0 then
  redis.call('SET', B .. 'pools:migrated', now_ms())
end
local rk = B .. 'routing:conf'
redis.call('DEL', rk)
for k, v in pairs(c.routing) do redis.call('HSET', rk, k, v) end
local ALL_CH = {'voice', 'email', 'fax', 'branch', 'webchat'}
for _, q in ipairs(c.queues) do
  local key = B .. 'queue:' .. q.name
  local before = redis.call('HMGET', key, 'pool', 'channels')
  redis.call('DEL', key)
  for k, v in pairs(q) do redis.call('HSET', key, k, tostring(v)) end
  redis.call('SADD', B .. 'queues', q.name)
  -- a new queue, a queue moved to another pool (its requirements or strategy changed) or
  -- serving other channels: its entries in the pools' heads sets (lib.lua) again
  if before[1] ~= q.pool or before[2] ~= q.channels then
    local serves = {}
    for ch in string.gmatch(q.channels, '%S+') do serves[ch] = true end
    for _, ch in ipairs(ALL_CH) do
      if before[1] and before[1] ~= q.pool then
        redis.call('ZREM', B .. 'pool:' .. before[1] .. ':heads:' .. ch, q.name)
      end
      local hk = B .. 'pool:' .. q.pool .. ':heads:' .. ch
      local h = serves[ch] and redis.call('ZRANGE', B .. 'q:' .. q.name .. ':wait:' .. ch, 0, 0, 'WITHSCORES') or {}
      if h[1] then redis.call('ZADD', hk, h[2], q.name) else redis.call('ZREM', hk, q.name) end
    end
  end
end
-- the local-day map of the report counters (docs/ANALYTICS.md, lib.lua rollup()): hash
-- 'rdays', field <hour> -> the UTC hour its local day starts in; 'zone' the zone of the
-- map; 'from' the first day whose day counters are complete (earlier days are read from the
-- hour hashes). On a new zone (or the first run) the day counters count from tomorrow, or
-- from today when no hour of today has been counted yet.
if c.days then
  local rk = B .. 'rdays'
  local zone = redis.call('HGET', rk, 'zone')
  if zone ~= c.days.zone then
    local from = c.days.tomorrow
    if not zone then
      local keys = {}
      for h = c.days.today, c.days.now_hour do keys[#keys + 1] = B .. 'rp:' .. h end
      if redis.call('EXISTS', unpack(keys)) == 0 then from = c.days.today end
    end
    redis.call('HSET', rk, 'zone', c.days.zone, 'from', from)
  end
  -- the fold mark (lib.lua rollup(), report_rebuild.lua 'fold'): hours before it are in the
  -- day counters. First set by this version: the current hour when nothing of it has been
  -- counted yet, else the next one (an earlier omniccd counted this hour's figures into
  -- the day counters already, as it went)
  if not redis.call('HGET', rk, 'folded') then
    local mark = c.days.now_hour
    if redis.call('EXISTS', B .. 'rp:' .. mark) == 1 then mark = mark + 1 end
    redis.call('HSET', rk, 'folded', mark)
  end
  local m = c.days.map
  for i = 1, #m, 200 do
    local args = {}
    for j = i, math.min(i + 199, #m) do args[#args + 1] = m[j] end
    redis.call('HSET', rk, unpack(args))
  end
end
return #c.queues
