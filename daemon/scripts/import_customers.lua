-- import_customers.lua: ARGV[1] JSON array of validated policyholder records (from the
-- daemon's import: identifiers normalised, segment computed). Upserts each customer found
-- by the insurer's own id, else by any identifier, else creates one; identifiers owned by
-- another customer are recorded as conflicts, never moved. Segment changes are kept.
-- Returns {created, updated, conflicts}.
local recs = cjson.decode(ARGV[1])
local now = now_ms()
local created, updated, nconf = 0, 0, 0
for _, r in ipairs(recs) do
  local cust = redis.call('GET', B .. 'idx:ext:' .. r.id)
  if cust then cust = resolve_customer(cust) end
  if not cust then
    for _, pair in ipairs(r.ids) do
      local c = redis.call('GET', B .. 'idx:' .. pair[1] .. ':' .. pair[2])
      if c then
        c = resolve_customer(c)
        -- a customer imported under another insurer id is another policyholder: the shared
        -- identifier becomes a conflict below, never a silent merge
        local ext = redis.call('HGET', B .. 'cust:' .. c, 'external_id')
        if not ext or ext == r.id then cust = c break end
      end
    end
  end
  if cust then
    updated = updated + 1
  else
    cust = 'P-' .. redis.call('INCR', B .. 'seq:cust')
    redis.call('HSET', B .. 'cust:' .. cust, 'id', cust, 'created_at', now)
    created = created + 1
  end
  local ckey = B .. 'cust:' .. cust
  redis.call('SET', B .. 'idx:ext:' .. r.id, cust)
  redis.call('SADD', ckey .. ':ids', 'ext:' .. r.id)
  for _, pair in ipairs(r.ids) do
    local ik = B .. 'idx:' .. pair[1] .. ':' .. pair[2]
    local owner = redis.call('GET', ik)
    if owner and resolve_customer(owner) ~= cust then
      local c = cjson.encode({at = now, import_id = r.id, customer = cust,
                              other_customer = resolve_customer(owner),
                              other_matched = pair[1] .. ':' .. pair[2]})
      redis.call('RPUSH', ckey .. ':conflicts', c)
      redis.call('RPUSH', B .. 'cust:' .. resolve_customer(owner) .. ':conflicts', c)
      nconf = nconf + 1
    elseif not owner then
      redis.call('SET', ik, cust)
      redis.call('SADD', ckey .. ':ids', pair[1] .. ':' .. pair[2])
    end
  end
  local old = redis.call('HGET', ckey, 'segment')
  if old ~= r.segment then
    redis.call('RPUSH', ckey .. ':segments', cjson.encode({at = now, from = old or cjson.null, to = r.segment}))
  end
  redis.call('HSET', ckey, 'external_id', r.id, 'segment', r.segment, 'updated_at', now,
             'annual_premium', r.annual_premium, 'tenure_years', r.tenure_years,
             'claims_last_3y', r.claims_last_3y)
  if r.name then redis.call('HSET', ckey, 'name', r.name) end
  if r.language then redis.call('HSET', ckey, 'language', r.language) end
end
return {created, updated, nconf}
