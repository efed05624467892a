-- queue_stats.lua: ARGV[1] JSON array of queue names (a page), ARGV[2] window in minutes.
-- Counters and window sums kept as things happen (q:<Q>:win, see qstat in lib.lua): O(1)
-- per queue, no scan of waiting work, agents or minutes.
local names = cjson.decode(ARGV[1])
local window = tonumber(ARGV[2])
local now = now_ms()
local out = {}
for _, q in ipairs(names) do
  local qc = qconf(q)
  if qc then
    local s = {name = q, strategy = qc.strategy, sla_seconds = tonumber(qc.sla_seconds), waiting = {},
               agents = {available = 0, busy = 0, away = 0, offline = 0}}
    local total = 0
    for _, ch in ipairs(qc.chanlist) do
      local n = redis.call('ZCARD', B .. 'q:' .. q .. ':wait:' .. ch)
      s.waiting[ch] = n
      total = total + n
    end
    s.waiting_total = total
    local oldest = redis.call('ZRANGE', B .. 'q:' .. q .. ':age', 0, 0, 'WITHSCORES')
    s.longest_wait_ms = oldest[2] and (now - tonumber(oldest[2])) or 0
    local ag = redis.call('HGETALL', queue_agents_key(q))
    for i = 1, #ag, 2 do s.agents[ag[i]] = tonumber(ag[i + 1]) end
    -- the window's sums with its bounds in one read; moved first only when it must be
    local m = math.floor(now / 60000)
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
end
return cjson.encode(out)
