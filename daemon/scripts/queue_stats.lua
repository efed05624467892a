-- queue_stats.lua: ARGV[1] JSON array (a page) of [name, pool, channels, strategy,
-- sla_seconds], what the daemon knows of each queue from its configuration, ARGV[2]
-- window in minutes. Counters and window sums kept as things happen (q:<Q>:win, see qstat
-- in lib.lua; agents by activity per pool, see agent_reindex): O(1) per queue, no scan of
-- waiting work, agents or minutes, and no read of the queue's configuration.
local page = cjson.decode(ARGV[1])
local window = tonumber(ARGV[2])
local now = now_ms()
local m = math.floor(now / 60000)
local out = {}
local pool_agents = {}   -- pool -> its counters (queues of one pool share them)
for _, e in ipairs(page) do
  local q, pool, channels = e[1], e[2], e[3]
  local s = {name = q, strategy = e[4], sla_seconds = tonumber(e[5]), waiting = {}}
  local total = 0
  for ch in string.gmatch(channels, '%S+') do
    local n = redis.call('ZCARD', B .. 'q:' .. q .. ':wait:' .. ch)
    s.waiting[ch] = n
    total = total + n
  end
  s.waiting_total = total
  local oldest = redis.call('ZRANGE', B .. 'q:' .. q .. ':age', 0, 0, 'WITHSCORES')
  s.longest_wait_ms = oldest[2] and (now - tonumber(oldest[2])) or 0
  local ag = pool_agents[pool]
  if not ag then
    ag = {available = 0, busy = 0, away = 0, offline = 0}
    local flat = redis.call('HGETALL', B .. 'pool:' .. pool .. ':agents')
    for i = 1, #flat, 2 do ag[flat[i]] = tonumber(flat[i + 1]) end
    pool_agents[pool] = ag
  end
  s.agents = ag
  -- the window's sums with its bounds in one read; moved first only when it must be
  local vals = redis.call('HMGET', B .. 'q:' .. q .. ':win', 'from', 'w', unpack(QSTAT_FIELDS))
  local from, w_for = tonumber(vals[1]), tonumber(vals[2])
  if not (from and w_for == window and from >= m - window + 1) then
    win_advance(q, m, window)
    vals = redis.call('HMGET', B .. 'q:' .. q .. ':win', 'from', 'w', unpack(QSTAT_FIELDS))
  end
  local w = {}
  for i, f in ipairs(QSTAT_FIELDS) do w[f] = tonumber(vals[i + 2]) or 0 end
  local answered_or_lost = w.accepted + w.abandoned
  s.window_minutes = window
  s.offered, s.accepted, s.abandoned, s.transferred, s.timed_out = w.offered, w.accepted, w.abandoned, w.transferred, w.timed_out
  s.service_level = answered_or_lost > 0 and (w.in_sla / answered_or_lost) or cjson.null
  s.asa_ms = w.accepted > 0 and math.floor(w.wait_sum_ms / w.accepted) or cjson.null
  s.aht_ms = w.handled > 0 and math.floor(w.handle_sum_ms / w.handled) or cjson.null
  out[#out + 1] = s
end
return cjson.encode(out)
