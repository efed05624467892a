-- branch_admin.lua: the branch registry and its figures, for the admin API
-- (channels/branch_api.c). ARGV[1] op:
--   sync   ARGV[2] JSON [branch...]  the [branch ID] sections of the config (on connect)
--   upsert ARGV[2] JSON branch       POST /v1/branches -> {created 0|1, branch JSON}
--   get    ARGV[2] id                -> branch JSON
--   list   ARGV[2] cursor, ARGV[3] limit -> {branches, next_cursor}
--   stats  ARGV[2] id                -> waiting, longest wait, today's and total counters
--   access ARGV[2] 'customer'|'agent'|'branch'|'all', ARGV[3] id, ARGV[4] before (entry id,
--          exclusive, '' = newest), ARGV[5] limit -> {entries, next_before}
-- A branch is {id, name, bank, region, services {SERVICE: QUEUE}, counters}.
local op = ARGV[1]
local now = now_ms()

local function view(id)
  local b = hash_to_table(redis.call('HGETALL', B .. 'branch:' .. id))
  if not b.id then return nil end
  b.services = cjson.decode(b.services or '{}')
  b.counters = tonumber(b.counters)
  b.created_at = tonumber(b.created_at)
  b.updated_at = tonumber(b.updated_at)
  b.terminals = redis.call('SCARD', B .. 'branch:' .. id .. ':terminals')
  return b
end

local function save(b, source)
  local key = B .. 'branch:' .. b.id
  local created = redis.call('EXISTS', key) == 0
  if created then redis.call('HSET', key, 'created_at', now) end
  redis.call('HSET', key, 'id', b.id, 'name', b.name or '', 'bank', b.bank or '', 'region', b.region or '',
             'services', cjson.encode(b.services), 'counters', b.counters or 1, 'source', source,
             'updated_at', now)
  redis.call('ZADD', B .. 'branches', 0, b.id)
  return created
end

if op == 'sync' then
  local list = cjson.decode(ARGV[2])
  for _, b in ipairs(list) do save(b, 'config') end
  return #list
elseif op == 'upsert' then
  local b = cjson.decode(ARGV[2])
  local created = save(b, 'api')
  return {created and 1 or 0, cjson.encode(view(b.id))}
elseif op == 'get' then
  local v = view(ARGV[2])
  if not v then return fail('ERR_NOT_FOUND', 'no branch ' .. ARGV[2]) end
  return cjson.encode(v)
elseif op == 'list' then
  local start = '-'
  if ARGV[2] ~= '' then start = '(' .. ARGV[2] end
  local limit = tonumber(ARGV[3])
  local ids = redis.call('ZRANGEBYLEX', B .. 'branches', start, '+', 'LIMIT', 0, limit + 1)
  local out = {}
  for i = 1, math.min(#ids, limit) do out[#out + 1] = view(ids[i]) end
  local res = {branches = out}
  if #ids > limit then res.next_cursor = ids[limit] end
  return cjson.encode(res)
elseif op == 'stats' then
  local id = ARGV[2]
  local b = view(id)
  if not b then return fail('ERR_NOT_FOUND', 'no branch ' .. id) end
  local bk = B .. 'branch:' .. id
  -- visits leave the waiting set in branch scripts, but also through the router (an accepted
  -- offer), max_wait or a cancel: what is no longer waiting is dropped here (bounded)
  local waiting, longest, by_service = 0, 0, {}
  local w = redis.call('ZRANGE', bk .. ':waiting', 0, 499, 'WITHSCORES')
  for i = 1, #w, 2 do
    local st = redis.call('HMGET', B .. 'ix:' .. w[i], 'state', 'service')
    if st[1] == 'queued' or st[1] == 'offered' then
      waiting = waiting + 1
      longest = math.max(longest, now - tonumber(w[i + 1]))
      by_service[st[2] or '?'] = (by_service[st[2] or '?'] or 0) + 1
    else
      redis.call('ZREM', bk .. ':waiting', w[i])
    end
  end
  local parked = 0
  local p = redis.call('ZRANGE', bk .. ':parked', 0, 499)
  for _, ix in ipairs(p) do
    if redis.call('HGET', B .. 'ix:' .. ix, 'state') == 'parked' then parked = parked + 1
    else redis.call('ZREM', bk .. ':parked', ix) end
  end
  local function counters(key)
    local t = {visits = 0, called = 0, served = 0, no_shows = 0, handovers = 0, parked = 0, transfers = 0,
               lookups = 0, documents = 0, fnol = 0, appointments = 0, wait_sum_ms = 0, serve_sum_ms = 0}
    local h = redis.call('HGETALL', key)
    for i = 1, #h, 2 do t[h[i]] = tonumber(h[i + 1]) end
    t.avg_wait_ms = t.called > 0 and math.floor(t.wait_sum_ms / t.called) or cjson.null
    t.avg_serve_ms = t.served > 0 and math.floor(t.serve_sum_ms / t.served) or cjson.null
    t.wait_sum_ms, t.serve_sum_ms = nil, nil
    return t
  end
  local d = math.floor(now / 86400000)
  return cjson.encode({branch = id, at = now, waiting = waiting, longest_wait_ms = longest,
                       waiting_by_service = by_service, parked = parked,
                       today = counters(bk .. ':day:' .. d), totals = counters(bk .. ':totals')})
elseif op == 'access' then
  local key
  if ARGV[2] == 'customer' then key = B .. 'access:cust:' .. ARGV[3]
  elseif ARGV[2] == 'agent' then key = B .. 'access:agent:' .. ARGV[3]
  elseif ARGV[2] == 'branch' then key = B .. 'access:branch:' .. ARGV[3]
  else key = B .. 'access:log' end
  local limit = tonumber(ARGV[5])
  local start = '+'
  if ARGV[4] ~= '' then start = '(' .. ARGV[4] end
  local es = redis.call('XREVRANGE', key, start, '-', 'COUNT', limit + 1)
  local out = {}
  for i = 1, math.min(#es, limit) do
    local e = hash_to_table(es[i][2])
    e.id = es[i][1]
    e.at = tonumber(e.at)
    out[#out + 1] = e
  end
  local res = {entries = out}
  if #es > limit then res.next_before = es[limit][1] end
  return cjson.encode(res)
end
return fail('ERR_INVALID', 'unknown operation')
