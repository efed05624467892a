-- lib.lua: helpers prepended to every omnicc script (see tools/embed_scripts.py).
-- KEYS[1] is the hash-tagged key base ("omnicc:{main}:"): every key a script touches
-- starts with it, so a routing domain's keys share one Redis Cluster slot.
local B = KEYS[1]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- follow merged_into links to the surviving customer (bounded: merges form short chains)
local function resolve_customer(cid)
  for _ = 1, 32 do
    local m = redis.call('HGET', B .. 'cust:' .. cid, 'merged_into')
    if not m or m == '' then return cid end
    cid = m
  end
  return cid
end

local function hash_to_table(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- Analytics (docs/ANALYTICS.md, docs/EXPORT.md): the warehouse export stream 'xs' mirrors
-- every case event without its texts (ids, types, timings only), and carries the report
-- facts written by rollup() below. Settings come from routing:conf, read once per call.
local an_conf
local function analytics_conf()
  if not an_conf then
    local v = redis.call('HMGET', B .. 'routing:conf', 'rollups', 'export_maxlen', 'retention_channels')
    an_conf = {rollups = v[1] ~= '0', maxlen = v[2] or '10000000', retention = v[3] or ''}
  end
  return an_conf
end
local XS_KEEP = {type = 1, interaction = 1, channel = 1, direction = 1, agent = 1, reservation = 1,
                 wait_ms = 1, disposition = 1, to_queue = 1, to_agent = 1, from_queue = 1,
                 action = 1, into = 1, branch = 1}
local function export_case_event(case_id, now, fields)
  local args = {B .. 'xs', 'MAXLEN', '~', analytics_conf().maxlen, '*', 'at', tostring(now),
                'kind', 'case_event', 'case', case_id}
  for i = 1, #fields - 1, 2 do
    if XS_KEEP[fields[i]] then args[#args + 1] = fields[i]; args[#args + 1] = fields[i + 1] end
  end
  redis.call('XADD', unpack(args))
end

-- report facts of this call (rollup() below) not yet written into a case history entry:
-- the next history_add() of the call carries them in its field 'rp', one fact a line
-- '<hour>|<channel>|<queue>|<segment>|<branch>|<agent>|<metric>:<n> ...', so the case
-- histories hold every figure and `omniccd reports rebuild` recomputes the counters from
-- them. Scripts call rollup() before the history entry of the same change.
local rp_pending = {}

local function history_add(case_id, now, fields)
  local args = {B .. 'case:' .. case_id .. ':hist', 'MAXLEN', '~', '100000', '*', 'at', tostring(now)}
  for i = 1, #fields do args[#args + 1] = fields[i] end
  if #rp_pending > 0 then
    args[#args + 1] = 'rp'
    args[#args + 1] = table.concat(rp_pending, '\n')
    rp_pending = {}
  end
  export_case_event(case_id, now, fields)
  return redis.call('XADD', unpack(args))
end

-- the global event stream, read by every daemon instance for SSE fan-out
local function event_add(now, fields)
  local args = {B .. 'events', 'MAXLEN', '~', '200000', '*', 'at', tostring(now)}
  for i = 1, #fields do args[#args + 1] = fields[i] end
  return redis.call('XADD', unpack(args))
end

-- the first n bytes of s, cut back to a whole UTF-8 character
local function utf8_prefix(s, n)
  if #s <= n then return s end
  while n > 0 do
    local b = string.byte(s, n + 1)
    if not b or b < 0x80 or b >= 0xC0 then break end
    n = n - 1
  end
  return string.sub(s, 1, n)
end

local function fail(code, msg)
  return redis.error_reply(code .. ' ' .. msg)
end

---------------------------------------------------------------------------------------------
-- Routing (docs/ROUTING.md). Every operation below costs O(log n) in the waiting work and
-- is bounded by one agent's own queues and channels, never by the floor:
--   q:<Q>:wait:<ch>   zset  waiting interactions, score = arrival_s - boost_s (ageing free)
--   q:<Q>:age         zset  waiting interactions by arrival ms (longest wait, counts)
-- Queues with the same requirements and strategy form a pool P ("<strategy>/<skills>",
-- written by the daemon into queue:<Q> as 'pool'): they have the same eligible agents in
-- the same order, so the agent indexes are kept once per pool, not once per queue:
--   pool:<P>:avail:<ch>  zset  agents of P, available, with capacity left on ch; score
--                              by P's strategy (last activity, occupancy, last offer)
--   pool:<P>:heads:<ch>  zset  queue -> score of the head of q:<Q>:wait:<ch>, for the
--                              queues of P that have work waiting on ch
--   pool:<P>:agents      hash  P's agents by activity (available, busy, away, offline)
--   agent:<id>:pools     string '<ch> <P>' lines, one for each pool of the agent's queues
--                              and channel (a string: a tenth of a set's memory)
--   deadlines         zset  due ms -> "resv:R-1" | "ovf:I-1" | "maxw:I-1" | "wrap:I-1" | "excl:I-1"
local CHANNEL_SCAN = 16   -- candidates looked at past exclusions (rejected offers) per index
local qconf_cache = {}

local function split(s)
  local t = {}
  for w in string.gmatch(s or '', '%S+') do t[#t + 1] = w end
  return t
end

local function qconf(q)
  local c = qconf_cache[q]
  if c == nil then
    c = hash_to_table(redis.call('HGETALL', B .. 'queue:' .. q))
    if c.channels then
      c.chanlist = split(c.channels)
      -- a configuration written without pools: each queue its own
      if not c.pool or c.pool == '' then c.pool = (c.strategy or 'longest-idle') .. '/=' .. q end
    else
      c = false
    end
    qconf_cache[q] = c
  end
  return c
end

local function pool_strategy(p) return string.match(p, '^([^/]*)/') end

-- the agents-by-activity counters a queue reports (those of its pool)
local function queue_agents_key(q)
  local qc = qconf(q)
  return B .. 'pool:' .. (qc and qc.pool or ('longest-idle/=' .. q)) .. ':agents'
end

local function avail_key(q, ch) return B .. 'pool:' .. qconf(q).pool .. ':avail:' .. ch end

local function rconf(field, default)
  local v = redis.call('HGET', B .. 'routing:conf', field)
  return tonumber(v) or default
end

local function agent_get(aid)
  local flat = redis.call('HGETALL', B .. 'agent:' .. aid)
  if #flat == 0 then return nil end
  return hash_to_table(flat)
end

local function agent_free_for(a, ch)
  if a.presence ~= 'available' then return false end
  local cap = tonumber(a['cap:' .. ch]) or 0
  return (tonumber(a['load:' .. ch]) or 0) < cap and
         (tonumber(a.load_total) or 0) < (tonumber(a.cap_total) or 0)
end

local function agent_score(a, strategy)
  if strategy == 'least-occupied' then
    local occ = math.floor(100 * (tonumber(a.load_total) or 0) / math.max(1, tonumber(a.cap_total) or 1))
    return occ * 1e13 + (tonumber(a.last_activity) or 0)
  elseif strategy == 'round-robin' then
    return tonumber(a.last_offer) or 0
  end
  return tonumber(a.last_activity) or 0
end

-- the channels on which the agent is now in its pools' avail sets, and its score there by
-- strategy (an entry whose score did not change is not written again)
local ALL_CHANNELS = {'voice', 'email', 'fax', 'branch', 'webchat'}
local STRATEGIES = {'longest-idle', 'least-occupied', 'round-robin'}
local function free_map(a)
  local m = {score = {}}
  for _, ch in ipairs(ALL_CHANNELS) do m[ch] = agent_free_for(a, ch) end
  for _, st in ipairs(STRATEGIES) do m.score[st] = agent_score(a, st) end
  return m
end

-- derived activity for supervisors: offline | away | available | busy
local function agent_activity(a)
  if a.presence ~= 'available' then return a.presence or 'offline' end
  if (tonumber(a.load_total) or 0) > 0 then return 'busy' end
  return 'available'
end

-- agent:<id>:pools from agent:<id>:queues (when the agent is saved): cost = its queues
local function agent_pools_build(aid)
  local seen, members = {}, {}
  for _, q in ipairs(redis.call('SMEMBERS', B .. 'agent:' .. aid .. ':queues')) do
    local qc = qconf(q)
    if qc then
      for _, ch in ipairs(qc.chanlist) do
        local m = ch .. ' ' .. qc.pool
        if not seen[m] then seen[m] = true; members[#members + 1] = m end
      end
    end
  end
  redis.call('SET', B .. 'agent:' .. aid .. ':pools', table.concat(members, '\n'))
  return members
end

-- the agent's '<ch> <pool>' list, and whether it was built just now: an agent saved
-- before pools existed (a data set of an older omniccd) gets it at its first change, and
-- is counted in its pools' activity counters as it was before that change (before)
local function agent_pool_members(aid, before)
  local text = redis.call('GET', B .. 'agent:' .. aid .. ':pools')
  if text then
    local m = {}
    for line in string.gmatch(text, '[^\n]+') do m[#m + 1] = line end
    return m, false
  end
  local m = agent_pools_build(aid)
  if before then
    local seen = {}
    for _, x in ipairs(m) do
      local p = string.match(x, '^%S+ (.+)$')
      if not seen[p] then
        seen[p] = true
        redis.call('HINCRBY', B .. 'pool:' .. p .. ':agents', before, 1)
      end
    end
  end
  return m, #m > 0
end

-- Bring every index entry of one agent up to date: cost = its pools x channels (queues of
-- the same requirements and strategy share one pool). An agent is never in an avail set of
-- a channel it has no capacity on (the capacity changes only in agent_upsert, which first
-- removes every entry: a == nil), so those channels need no call. was (optional, from
-- free_map before the change): the channels the agent was free on, so in the avail sets
-- of, and its scores then; a channel it was not free on and still is not needs no call
-- (a busy agent freeing and retaking a unit of capacity), nor one it stays free on with
-- the same score (round-robin's last offer does not move on a release).
local function agent_reindex(aid, a, old_activity, was)
  local act = a and agent_activity(a) or nil
  local counted = {}
  local members, fresh = agent_pool_members(aid, old_activity)
  if fresh then was = nil end   -- in no avail set yet
  for _, m in ipairs(members) do
    local ch, p = string.match(m, '^(%S+) (.+)$')
    local key = B .. 'pool:' .. p .. ':avail:' .. ch
    if not a then
      redis.call('ZREM', key, aid)
    elseif agent_free_for(a, ch) then
      local st = pool_strategy(p)
      local s = agent_score(a, st)
      if not (was and was[ch] and was.score[st] == s) then redis.call('ZADD', key, s, aid) end
    elseif (tonumber(a['cap:' .. ch]) or 0) > 0 and (not was or was[ch]) then
      redis.call('ZREM', key, aid)
    end
    if old_activity ~= act and not counted[p] then
      counted[p] = true
      local ak = B .. 'pool:' .. p .. ':agents'
      if old_activity then redis.call('HINCRBY', ak, old_activity, -1) end
      if act then redis.call('HINCRBY', ak, act, 1) end
    end
  end
end

local function minute_bucket(now) return math.floor(now / 60000) end

-- Sliding-window statistics of a queue, kept as things happen so that reading them costs
-- O(1) per queue whatever the window ([routing] stats_window, W minutes):
--   q:<Q>:win   hash  the sums over minutes [from, now] of each QSTAT_FIELDS field, and
--                     from, last (newest minute written), w (the W the sums are for)
--   q:<Q>:wmin  hash  '<minute>:<field>' -> the part of a sum added in that minute
-- Moving the window to minute m subtracts (and deletes) the minutes that left it: at most
-- W minutes of data are ever held, and each minute is subtracted once.
local QSTAT_FIELDS = {'offered', 'accepted', 'abandoned', 'transferred', 'in_sla', 'wait_sum_ms',
                      'handled', 'handle_sum_ms', 'timed_out'}
local win_at = {}   -- queue -> minute its window was moved to in this script

local function win_advance(q, m, W)
  if win_at[q] == m then return end
  win_at[q] = m
  local wk, mk = B .. 'q:' .. q .. ':win', B .. 'q:' .. q .. ':wmin'
  local h = redis.call('HMGET', wk, 'from', 'last', 'w')
  local from, last, w = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
  local lo = m - W + 1
  if from and w == W and from >= lo then return end
  if w ~= W then
    -- a new queue or another window: the sums again from the minutes held (at most 120)
    local flat = redis.call('HGETALL', mk)
    local sums, newest = {}, lo - 1
    redis.call('DEL', wk)
    for i = 1, #flat, 2 do
      local x, f = string.match(flat[i], '^(%-?%d+):(.+)$')
      x = tonumber(x)
      if x and x >= lo and x <= m then
        sums[f] = (sums[f] or 0) + tonumber(flat[i + 1])
        if x > newest then newest = x end
      else
        redis.call('HDEL', mk, flat[i])
      end
    end
    for f, v in pairs(sums) do redis.call('HSET', wk, f, v) end
    redis.call('HSET', wk, 'from', lo, 'last', newest, 'w', W)
  elseif not last or last < lo then
    -- nothing written within the window
    redis.call('DEL', wk, mk)
    redis.call('HSET', wk, 'from', lo, 'last', lo - 1, 'w', W)
  else
    -- from >= last - W + 1 (set when last was written), so at most W - 1 minutes
    for x = from, lo - 1 do
      local names = {}
      for i, f in ipairs(QSTAT_FIELDS) do names[i] = x .. ':' .. f end
      local vals = redis.call('HMGET', mk, unpack(names))
      for i, f in ipairs(QSTAT_FIELDS) do
        local v = tonumber(vals[i])
        if v and v ~= 0 then redis.call('HINCRBY', wk, f, -v) end
      end
      redis.call('HDEL', mk, unpack(names))
    end
    redis.call('HSET', wk, 'from', lo)
  end
end

local stats_w
local win_last = {}   -- queue -> minute its 'last' was set to in this script
local function qstat(q, now, field, by)
  by = by or 1
  stats_w = stats_w or rconf('stats_window', 15)
  local m = minute_bucket(now)
  win_advance(q, m, stats_w)
  redis.call('HINCRBY', B .. 'q:' .. q .. ':wmin', m .. ':' .. field, by)
  redis.call('HINCRBY', B .. 'q:' .. q .. ':win', field, by)
  if win_last[q] ~= m then
    win_last[q] = m
    redis.call('HSET', B .. 'q:' .. q .. ':win', 'last', m)
  end
  redis.call('HINCRBY', B .. 'q:' .. q .. ':totals', field, by)
end

-- One event for the supervisors' stream and, when it concerns an agent, the same entry id
-- in that agent's own stream, so Last-Event-ID works on either.
-- Every deadline goes through here, so the events of this script can tell every daemon
-- when its sweep is next due ('due' field): block ends, wrap-ups and overflows made by one
-- instance are acted on at their time by any instance, not at the next fallback sweep.
local next_due
local function deadline_add(due, member, flag)
  if flag then
    redis.call('ZADD', B .. 'deadlines', flag, due, member)
  else
    redis.call('ZADD', B .. 'deadlines', due, member)
  end
  if not next_due or due < next_due then next_due = due end
end

-- Redis' cjson writes an empty table as {}: a list that may be empty is set to
-- list_or_empty(t), and encode() writes [] where it is EMPTY_LIST.
local EMPTY_LIST = '\1[]'
local function list_or_empty(t) if #t == 0 then return EMPTY_LIST end return t end
local function encode(t)
  local json = cjson.encode(t)
  if string.find(json, '"\\u0001[]"', 1, true) then json = string.gsub(json, '"\\u0001%[%]"', '[]') end
  return json
end

local function emit(now, etype, aid, data)
  local json = encode(data) -- once for both streams (a screen pop is ~1 KB)
  local fields = {'type', etype, 'agent', aid or '', 'data', json}
  if next_due then
    fields[#fields + 1] = 'due'
    fields[#fields + 1] = string.format('%d', next_due)
  end
  local id = event_add(now, fields)
  if aid and aid ~= '' then
    redis.call('XADD', B .. 'agent:' .. aid .. ':events', 'MAXLEN', '~', '2000', id,
               'at', tostring(now), 'type', etype, 'agent', aid, 'data', json)
  end
  return id
end

local function ix_wait_key(ix) return B .. 'q:' .. ix.queue .. ':wait:' .. ix.channel end

-- after a change of q:<Q>:wait:<ch>: its head's score in pool:<P>:heads:<ch> (O(log n))
local function wait_head_update(q, ch)
  local qc = qconf(q)
  if not qc then return end
  local hk = B .. 'pool:' .. qc.pool .. ':heads:' .. ch
  local h = redis.call('ZRANGE', B .. 'q:' .. q .. ':wait:' .. ch, 0, 0, 'WITHSCORES')
  if h[1] then
    redis.call('ZADD', hk, h[2], q)
  else
    redis.call('ZREM', hk, q)
  end
end

-- every write of a wait set goes through wait_add / ix_dequeue, which keep the heads
local function wait_add(ix_id, ix)
  local key, s = ix_wait_key(ix), tonumber(ix.wait_score)
  redis.call('ZADD', key, s, ix_id)
  local qc = qconf(ix.queue)
  if qc then
    local hk = B .. 'pool:' .. qc.pool .. ':heads:' .. ix.channel
    local cur = redis.call('ZSCORE', hk, ix.queue)
    if not cur or s < tonumber(cur) then redis.call('ZADD', hk, s, ix.queue) end
  end
end

local function ix_enqueue(ix_id, ix, now)
  wait_add(ix_id, ix)
  redis.call('ZADD', B .. 'q:' .. ix.queue .. ':age', tonumber(ix.created_at), ix_id)
  local home = qconf(ix.home_queue or ix.queue)
  if home then
    -- a transfer starts a new wait (its score, and so its place, is kept)
    local created = tonumber(ix.wait_start or ix.created_at)
    if (tonumber(home.overflow_after) or 0) > 0 and not ix.overflowed_from then
      deadline_add(math.max(now + 1, created + home.overflow_after * 1000), 'ovf:' .. ix_id)
    end
    if (tonumber(home.max_wait) or 0) > 0 then
      deadline_add(math.max(now + 1, created + home.max_wait * 1000), 'maxw:' .. ix_id)
    end
  end
end

local function ix_dequeue(ix_id, ix)
  if redis.call('ZREM', ix_wait_key(ix), ix_id) == 1 then wait_head_update(ix.queue, ix.channel) end
  redis.call('ZREM', B .. 'q:' .. ix.queue .. ':age', ix_id)
end

local function excluded(ix_id, aid, now)
  local until_ms = redis.call('HGET', B .. 'ix:' .. ix_id .. ':excl', aid)
  return until_ms and tonumber(until_ms) > now
end

local function screen_pop(ix_id, ix)
  local cust = hash_to_table(redis.call('HGETALL', B .. 'cust:' .. ix.customer_id))
  local open = {}
  for _, cid in ipairs(redis.call('ZREVRANGE', B .. 'cust:' .. ix.customer_id .. ':cases', 0, 9)) do
    local c = redis.call('HMGET', B .. 'case:' .. cid, 'status', 'policy', 'last_channel')
    if c[1] == 'open' then open[#open + 1] = {id = cid, policy = c[2], last_channel = c[3]} end
  end
  local hist = {}
  for _, e in ipairs(redis.call('XREVRANGE', B .. 'case:' .. ix.case_id .. ':hist', '+', '-', 'COUNT', 10)) do
    local ev = hash_to_table(e[2]); ev.id = e[1]
    hist[#hist + 1] = ev
  end
  local view = {id = ix_id, channel = ix.channel, queue = ix.queue, case_id = ix.case_id,
                customer_id = ix.customer_id, from = ix.from, subject = ix.subject,
                created_at = tonumber(ix.created_at), external_id = ix.external_id}
  if ix.metadata then view.metadata = cjson.decode(ix.metadata) end
  return {interaction = view,
          customer = {id = ix.customer_id, name = cust.name, segment = cust.segment or 'standard'},
          open_cases = list_or_empty(open), history = list_or_empty(hist)}
end

-- Offer ix to aid: the reservation, the agent's load, indexes, history and the event.
-- defer: the caller (route_agent) brings the agent's index entries up to date itself, once
-- after all its offers, instead of once per offer.
local function reserve(ix_id, ix, aid, a, now, defer)
  local resv = 'R-' .. redis.call('INCR', B .. 'seq:resv')
  local timeout = rconf('offer_timeout:' .. ix.channel, 30)
  local expires = now + timeout * 1000
  ix_dequeue(ix_id, ix)
  redis.call('HSET', B .. 'resv:' .. resv, 'id', resv, 'interaction', ix_id, 'agent', aid,
             'queue', ix.queue, 'channel', ix.channel, 'created_at', now, 'expires_at', expires)
  redis.call('HSET', B .. 'ix:' .. ix_id, 'state', 'offered', 'reservation', resv, 'agent', aid)
  deadline_add(expires, 'resv:' .. resv)
  local old, was = agent_activity(a), (not defer) and free_map(a) or nil
  a['load:' .. ix.channel] = (tonumber(a['load:' .. ix.channel]) or 0) + 1
  a.load_total = (tonumber(a.load_total) or 0) + 1
  a.last_offer = now
  a.last_activity = now
  redis.call('HSET', B .. 'agent:' .. aid, 'load:' .. ix.channel, a['load:' .. ix.channel],
             'load_total', a.load_total, 'last_offer', now, 'last_activity', now)
  if not defer then agent_reindex(aid, a, old, was) end
  history_add(ix.case_id, now, {'type', 'offer.created', 'interaction', ix_id, 'agent', aid,
                                'reservation', resv, 'channel', ix.channel})
  qstat(ix.queue, now, 'offered')
  local pop = screen_pop(ix_id, ix)
  pop.reservation = {id = resv, expires_at = expires, timeout = timeout}
  emit(now, 'offer', aid, pop)
  ix.state = 'offered'
  return resv
end

-- A new or returning interaction: the best agent for it, if any is free (sticky first).
local function route_interaction(ix_id, now)
  local ix = hash_to_table(redis.call('HGETALL', B .. 'ix:' .. ix_id))
  if ix.state ~= 'queued' then return nil end
  local qc = qconf(ix.queue)
  if not qc then return nil end
  local avail = avail_key(ix.queue, ix.channel)
  local sticky = tonumber(qc.sticky_seconds) or 0
  if sticky > 0 then
    local c = redis.call('HMGET', B .. 'case:' .. ix.case_id, 'last_agent', 'last_agent_at')
    if c[1] and tonumber(c[2] or 0) + sticky * 1000 >= now and redis.call('ZSCORE', avail, c[1])
       and not excluded(ix_id, c[1], now) then
      return reserve(ix_id, ix, c[1], agent_get(c[1]), now)
    end
  end
  for _, aid in ipairs(redis.call('ZRANGE', avail, 0, CHANNEL_SCAN - 1)) do
    if not excluded(ix_id, aid, now) then
      return reserve(ix_id, ix, aid, agent_get(aid), now)
    end
  end
  return nil
end

-- An agent with capacity: the best waiting interaction across its queues and channels,
-- repeated while capacity remains. Each (pool, channel) of the agent has one heads set,
-- the score of each of its queues' first waiting interaction: one read per pool and
-- channel finds the best head, O(pools x channels x log n). Only when that head is blocked
-- for this agent (it rejected it) is the pool read queue by queue, the first CHANNEL_SCAN
-- of each. After an offer only the source it came from is read again (the others did not
-- change); at most capacity_total <= 500 offers, each taking a unit of it. Index entries
-- are updated once at the end. stale: the agent's activity before a change the caller
-- made without updating its index entries (agent_release(..., true)).
local function route_agent(aid, now, stale, stale_was)
  local a = agent_get(aid)
  if not a then return 0 end
  local old, was = stale or agent_activity(a), stale_was
  if not stale then was = free_map(a) end
  local offers = 0
  if a.presence == 'available' and (tonumber(a.load_total) or 0) < (tonumber(a.cap_total) or 0) then
    local srcs = {}   -- per (pool, channel) the agent has capacity on
    local members, fresh = agent_pool_members(aid, old)
    if fresh then stale, was = stale or old, nil end   -- index it below, whatever happens
    for _, m in ipairs(members) do
      local ch, p = string.match(m, '^(%S+) (.+)$')
      if (tonumber(a['cap:' .. ch]) or 0) > 0 then
        srcs[#srcs + 1] = {hk = B .. 'pool:' .. p .. ':heads:' .. ch, ch = ch}
      end
    end
    -- one queue's wait set: the next candidate not yet ruled out, its id and score, or nil
    local function peek(h)
      if not h.c then
        -- the head alone first; the CHANNEL_SCAN window only past an exclusion
        h.c, h.pos, h.full = redis.call('ZRANGE', h.key, 0, 0, 'WITHSCORES'), 1, false
      end
      local i = 2 * h.pos - 1
      if h.c[i] then return h.c[i], tonumber(h.c[i + 1]) end
      return nil
    end
    local function skip(h)
      if not h.full then
        h.c, h.full = redis.call('ZRANGE', h.key, 0, CHANNEL_SCAN - 1, 'WITHSCORES'), true
      end
      h.pos = h.pos + 1
    end
    -- the best candidate of a pool source scoring below bound (nil: any): the source to
    -- read again after an offer from it, the interaction, its score; or nil
    local function cand(h, bound)
      if h.subs then
        local bs, bid, bsc = nil, nil, bound
        for _, sub in ipairs(h.subs) do
          local id, sc = peek(sub)
          while id and (not bsc or sc < bsc) and excluded(id, aid, now) do
            skip(sub)
            id, sc = peek(sub)
          end
          if id and (not bsc or sc < bsc) then bs, bid, bsc = sub, id, sc end
        end
        if bs then return bs, bid, bsc end
        return nil
      end
      if not h.c then h.c, h.id = redis.call('ZRANGE', h.hk, 0, 0, 'WITHSCORES'), nil end
      if not h.c[1] then return nil end
      local sc = tonumber(h.c[2])
      if bound and sc >= bound then return nil end
      if not h.id then
        h.id = redis.call('ZRANGE', B .. 'q:' .. h.c[1] .. ':wait:' .. h.ch, 0, 0)[1]
        if not h.id then return nil end
      end
      if not excluded(h.id, aid, now) then return h, h.id, sc end
      -- the pool's best head is blocked for this agent: its queues one by one from now on
      h.subs = {}
      for _, q in ipairs(redis.call('ZRANGE', h.hk, 0, -1)) do
        h.subs[#h.subs + 1] = {key = B .. 'q:' .. q .. ':wait:' .. h.ch}
      end
      return cand(h, bound)
    end
    for _ = 1, 500 do
      if (tonumber(a.load_total) or 0) >= (tonumber(a.cap_total) or 0) then break end
      local best, best_id, best_score
      for _, h in ipairs(srcs) do
        if agent_free_for(a, h.ch) then
          local src, id, sc = cand(h, best_score)
          if src then best, best_id, best_score = src, id, sc end
        end
      end
      if not best then break end
      local ix = hash_to_table(redis.call('HGETALL', B .. 'ix:' .. best_id))
      reserve(best_id, ix, aid, a, now, true)
      best.c = nil   -- its set changed: read its head again
      offers = offers + 1
    end
  end
  if offers > 0 or stale then agent_reindex(aid, a, old, was) end
  return offers
end

-- Give back one unit of the agent's capacity on ch (reservation ended or work completed).
-- defer: the caller calls route_agent(aid, now, <returned old activity>) next, which
-- updates the index entries (nothing in between may read the agent's avail entries).
local function agent_release(aid, ch, now, defer)
  local a = agent_get(aid)
  if not a then return nil end
  local old, was = agent_activity(a), free_map(a)
  a['load:' .. ch] = math.max(0, (tonumber(a['load:' .. ch]) or 0) - 1)
  a.load_total = math.max(0, (tonumber(a.load_total) or 0) - 1)
  a.last_activity = now
  redis.call('HSET', B .. 'agent:' .. aid, 'load:' .. ch, a['load:' .. ch], 'load_total', a.load_total,
             'last_activity', now)
  if defer then return a, old, was end
  agent_reindex(aid, a, old, was)
  return a
end

-- defer: as for agent_release, the caller's route_agent(aid, now, old, was) updates the
-- index entries (agent_state: becoming available is followed by routing the agent)
local function agent_set_presence(aid, a, presence, reason, now, defer)
  local old, was = agent_activity(a), free_map(a)
  a.presence = presence
  a.reason = reason or ''
  redis.call('HSET', B .. 'agent:' .. aid, 'presence', presence, 'reason', a.reason,
             'presence_at', now, 'last_activity', now)
  a.last_activity = now
  if presence == 'available' then redis.call('HSET', B .. 'agent:' .. aid, 'no_answer', 0) end
  redis.call('XADD', B .. 'agent:' .. aid .. ':activity', 'MAXLEN', '~', '10000', '*',
             'at', tostring(now), 'presence', presence, 'reason', a.reason)
  if not defer then agent_reindex(aid, a, old, was) end
  emit(now, 'agent.presence', aid, {agent = aid, presence = presence, reason = a.reason})
  return old, was
end

-- An offer that ended without acceptance: back to waiting (same place), agent released.
local function reservation_end(resv, now, how)
  local r = hash_to_table(redis.call('HGETALL', B .. 'resv:' .. resv))
  if not r.id then return nil end
  redis.call('DEL', B .. 'resv:' .. resv)
  redis.call('ZREM', B .. 'deadlines', 'resv:' .. resv)
  local ix_id, aid = r.interaction, r.agent
  local ikey = B .. 'ix:' .. ix_id
  local block = rconf('reject_block', 300)
  if block > 0 then
    redis.call('HSET', ikey .. ':excl', aid, now + block * 1000)
    redis.call('EXPIRE', ikey .. ':excl', block + 60)
    -- one deadline per interaction, at the earliest block end (sweep re-arms the next)
    local due = redis.call('ZSCORE', B .. 'deadlines', 'excl:' .. ix_id)
    if not due or tonumber(due) > now + block * 1000 then
      deadline_add(now + block * 1000, 'excl:' .. ix_id)
    end
  end
  local ix = hash_to_table(redis.call('HGETALL', ikey))
  if ix.state == 'offered' and ix.reservation == resv then
    redis.call('HSET', ikey, 'state', 'queued')
    redis.call('HDEL', ikey, 'reservation', 'agent')
    ix.state = 'queued'
    ix_enqueue(ix_id, ix, now)
  end
  history_add(ix.case_id, now, {'type', 'offer.' .. how, 'interaction', ix_id, 'agent', aid,
                                'reservation', resv})
  emit(now, 'offer.' .. how, aid, {reservation = resv, interaction = ix_id, agent = aid})
  local a = agent_release(aid, r.channel, now)
  if a and how == 'timeout' then
    local n = redis.call('HINCRBY', B .. 'agent:' .. aid, 'no_answer', 1)
    if n >= rconf('max_no_answer', 3) and a.presence == 'available' then
      agent_set_presence(aid, a, 'away', 'no-answer', now)
    end
  end
  if ix.state == 'queued' then route_interaction(ix_id, now) end
  route_agent(aid, now)
  return r
end

-- Auth: '' means the admin token; otherwise the sha256 of an agent token, which must
-- belong to the agent acted for.
local function agent_authorised(aid, token_sha)
  if token_sha == '' then return true end
  return redis.call('GET', B .. 'token:' .. token_sha) == aid
end

---------------------------------------------------------------------------------------------
-- Report rollups (docs/ANALYTICS.md): hour buckets written by the script that changes state,
-- O(1) per event. Every figure of an interaction counts in the UTC hour it arrived, under
-- the dimensions it had then: channel, entry queue (home_queue until a transfer moves it,
-- then the field 'rq' keeps the first), the customer's segment at arrival, branch (from the
-- metadata), and the agent concerned ('-' when none). One hash per hour, rp:<hour>, field
-- '<channel>|<queue>|<segment>|<branch>|<agent>|<metric>': one HINCRBY per metric, whatever
-- the number of dimensions. Each call also appends one 'fact' to the export stream 'xs'
-- (dims = that same '<channel>|...|<agent>', m = 'metric:n metric:n'), so a warehouse or
-- `omniccd reports rebuild` reproduces the counters exactly.
local function rp_dims(ix, agent)
  local br = ix.metadata and string.match(ix.metadata, '"branch"%s*:%s*"([^"|]*)"') or ''
  if br == '' then br = '-' end
  return (ix.channel or '-') .. '|' .. (ix.rq or ix.home_queue or ix.queue or '-') .. '|' ..
         (ix.segment or 'standard') .. '|' .. br .. '|' .. ((agent and agent ~= '') and agent or '-')
end

-- Besides the hour hash, one small hash per local day (of [analytics] timezone) and
-- dimension, rd:<day>:<dim> (dim = channel|queue|segment|branch|agent), field
-- '<value>|<metric>', which daily and weekly reports read instead of the hours. <day> is
-- the UTC hour the local day starts in; the daemon keeps the map hour -> day in the hash
-- 'rdays' (field <hour>), so no time zone arithmetic runs here. Agent and branch '-' (none)
-- are not kept per day: a report derives them as the total minus the agents (branches).
-- The day counters are not written here for an hour still open: once an hour has ended,
-- report_rebuild.lua 'fold' adds its whole hash into them in one call and moves the mark
-- 'rdays' 'folded' past it (every hour before the mark is in the day counters). Only a
-- figure of an hour already folded (a late one: answered, handled... after the fold) is
-- added to the day counters here; a report reads the hours from the mark on from their
-- hour hashes. So an ingest writes the hour hash only.
local rd_cache = {}
local function rp_day(hour)
  local d = rd_cache[hour]
  if d == nil then
    local v = redis.call('HMGET', B .. 'rdays', 'folded', hour)
    local mark = tonumber(v[1])
    -- no mark: a database no folding omniccd has connected to writes every day directly
    d = (not mark or hour < mark) and v[2] or false
    rd_cache[hour] = d
  end
  return d
end

local function rollup(ix, now, m, agent, dims)
  if not analytics_conf().rollups or not ix or not ix.id then return end
  local hour = math.floor((tonumber(ix.created_at) or now) / 3600000)
  dims = dims or rp_dims(ix, agent)
  local key = B .. 'rp:' .. hour
  local day = rp_day(hour)
  local dc, dq, ds, db, da, dk
  if day then
    dc, dq, ds, db, da = string.match(dims, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
    dk = B .. 'rd:' .. day .. ':'
  end
  local ms = {}
  for k, v in pairs(m) do
    v = math.floor(v)
    ms[#ms + 1] = k .. ':' .. v
    redis.call('HINCRBY', key, dims .. '|' .. k, v)
    if dc then
      redis.call('HINCRBY', dk .. 'channel', dc .. '|' .. k, v)
      redis.call('HINCRBY', dk .. 'queue', dq .. '|' .. k, v)
      redis.call('HINCRBY', dk .. 'segment', ds .. '|' .. k, v)
      if db ~= '-' then redis.call('HINCRBY', dk .. 'branch', db .. '|' .. k, v) end
      if da ~= '-' then redis.call('HINCRBY', dk .. 'agent', da .. '|' .. k, v) end
    end
  end
  rp_pending[#rp_pending + 1] = hour .. '|' .. dims .. '|' .. table.concat(ms, ' ')
  redis.call('XADD', B .. 'xs', 'MAXLEN', '~', analytics_conf().maxlen, '*', 'at', tostring(now),
             'kind', 'fact', 'case', ix.case_id or '', 'interaction', ix.id, 'hour', tostring(hour),
             'dims', dims, 'm', table.concat(ms, ' '))
end

-- At ingest: count the arrival; index it for retention; first-contact resolution.
local function rollup_arrival(ix_id, ix, case_id, segment, now, new_case)
  -- retention (docs/ANALYTICS.md): arrivals by time, for the channels that have a period
  if string.find(' ' .. analytics_conf().retention .. ' ', ' ' .. ix.channel .. ' ', 1, true) then
    redis.call('ZADD', B .. 'ret:' .. ix.channel, now, ix_id)
  end
  if not analytics_conf().rollups then return end
  local m = {offered = 1}
  if new_case then m.new_cases = 1 end
  rollup({id = ix_id, created_at = now, channel = ix.channel, queue = ix.queue, segment = segment,
          metadata = ix.metadata, case_id = case_id}, now, m, nil)
  -- a case's second contact counts one repeat_cases where (and under the dimensions with
  -- which) its first contact was counted: that interaction is named by case.opened
  if not new_case and redis.call('HINCRBY', B .. 'case:' .. case_id, 'rp_contacts', 1) == 1 then
    local first = redis.call('XRANGE', B .. 'case:' .. case_id .. ':hist', '-', '+', 'COUNT', 1)[1]
    local fid = first and hash_to_table(first[2]).interaction
    if fid then
      local f = hash_to_table(redis.call('HGETALL', B .. 'ix:' .. fid))
      if f.id then rollup(f, now, {repeat_cases = 1}, nil) end
    end
  end
end

-- At acceptance: only the first one answers the interaction (a transfer is re-accepted).
local function rollup_accept(ix, now, agent)
  if ix.assigned_at then return end
  local wait = now - (tonumber(ix.created_at) or now)
  local qc = qconf(ix.rq or ix.home_queue or ix.queue)
  local sla = ((qc and tonumber(qc.sla_seconds)) or 20) * 1000
  rollup(ix, now, {answered = 1, wait_ms = wait, answered_in_sla = wait <= sla and 1 or 0}, agent)
end

-- At a transfer (before the interaction's queue changes): the figure, and the entry queue
-- kept for the figures still to come.
local function rollup_transfer(ix, now, agent)
  if not analytics_conf().rollups then return end
  if not ix.rq then
    ix.rq = ix.home_queue or ix.queue
    redis.call('HSET', B .. 'ix:' .. ix.id, 'rq', ix.rq)
  end
  rollup(ix, now, {transfers = 1, handle_ms = now - tonumber(ix.assigned_at or now)}, agent)
end
