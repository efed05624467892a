-- sync_config.lua: the daemon's queue and routing configuration, written at connect so that
-- every script reads it in O(1). ARGV[1]: {routing = {...}, days = {...}, queues = [{name,
-- pool, channels, strategy, sticky_seconds, overflow_after, overflow_target, max_wait,
-- on_max_wait, sla_seconds}]}: the first call brings routing and days and no queues, the
-- next ones a page of queues each (router_sync_documents: no call holds Redis long).
-- Instances sharing one Redis must run the same configuration.
local c = cjson.decode(ARGV[1])
if c.routing then
  -- a data set with no agents has none to put in routing pools (sweep.lua's walk): done
  if redis.call('EXISTS', B .. 'pools:migrated') == 0 and redis.call('ZCARD', B .. 'agents') == 0 then
    redis.call('SET', B .. 'pools:migrated', now_ms())
  end
  local rk = B .. 'routing:conf'
  local fields = {}
  for k, v in pairs(c.routing) do fields[#fields + 1] = k; fields[#fields + 1] = v end
  redis.call('DEL', rk)
  redis.call('HSET', rk, unpack(fields))
end
local ALL_CH = {'voice', 'email', 'fax', 'branch', 'webchat'}
for _, q in ipairs(c.queues) do
  local key = B .. 'queue:' .. q.name
  local before = hash_to_table(redis.call('HGETALL', key))
  -- written only when it differs (a reconnect with the same configuration reads only)
  local fields, same, n = {}, true, 0
  for k, v in pairs(q) do
    local text = tostring(v)
    fields[#fields + 1] = k; fields[#fields + 1] = text
    if before[k] ~= text then same = false end
    n = n + 1
  end
  for _ in pairs(before) do n = n - 1 end
  if not same or n ~= 0 then
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(fields))
  end
  redis.call('SADD', B .. 'queues', q.name)
  -- a new queue, a queue moved to another pool (its requirements or strategy changed) or
  -- serving other channels: its entries in the pools' heads sets (lib.lua) again
  if before.pool ~= q.pool or before.channels ~= q.channels then
    local serves = {}
    for ch in string.gmatch(q.channels, '%S+') do serves[ch] = true end
    for _, ch in ipairs(ALL_CH) do
      if before.pool and before.pool ~= q.pool then
        redis.call('ZREM', B .. 'pool:' .. before.pool .. ':heads:' .. ch, q.name)
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
