-- merge_customers.lua: ARGV[1] surviving customer, ARGV[2] customer merged into it.
-- Identifiers are re-pointed, cases and their history kept and re-attached; the merged
-- customer remains as a tombstone (merged_into) so old references still resolve.
-- Cost: proportional to the merged customer's own identifiers and cases.
local into, from = ARGV[1], ARGV[2]
local now = now_ms()
if redis.call('EXISTS', B .. 'cust:' .. into) == 0 then return fail('ERR_NOT_FOUND', 'no customer ' .. into) end
if redis.call('EXISTS', B .. 'cust:' .. from) == 0 then return fail('ERR_NOT_FOUND', 'from: no customer ' .. from) end
if into == from then return fail('ERR_INVALID', 'from: cannot merge a customer into itself') end
local ri, rf = resolve_customer(into), resolve_customer(from)
if ri ~= into then return fail('ERR_CONFLICT', into .. ' was merged into ' .. ri) end
if rf == into then return {into, 0} end          -- already merged: idempotent
if rf ~= from then return fail('ERR_CONFLICT', 'from: ' .. from .. ' was merged into ' .. rf) end

local ik, fk = B .. 'cust:' .. into, B .. 'cust:' .. from
for _, m in ipairs(redis.call('SMEMBERS', fk .. ':ids')) do
  redis.call('SET', B .. 'idx:' .. m, into)
  redis.call('SADD', ik .. ':ids', m)
end
redis.call('DEL', fk .. ':ids')
local moved = 0
local fcases = redis.call('ZRANGE', fk .. ':cases', 0, -1, 'WITHSCORES')
for i = 1, #fcases, 2 do
  local case_id = fcases[i]
  redis.call('ZADD', ik .. ':cases', fcases[i + 1], case_id)
  redis.call('HSET', B .. 'case:' .. case_id, 'customer_id', into)
  history_add(case_id, now, {'type', 'customer.merged', 'from', from, 'into', into})
  moved = moved + 1
end
redis.call('DEL', fk .. ':cases')
local open = redis.call('HGETALL', fk .. ':open')
for i = 1, #open, 2 do
  redis.call('HSETNX', ik .. ':open', open[i], open[i + 1])
end
redis.call('DEL', fk .. ':open')
local fname = redis.call('HGET', fk, 'name')
if fname and not redis.call('HGET', ik, 'name') then redis.call('HSET', ik, 'name', fname) end
redis.call('HSET', fk, 'merged_into', into, 'updated_at', now)
redis.call('HSET', ik, 'updated_at', now)
redis.call('RPUSH', ik .. ':merges', cjson.encode({at = now, from = from}))
emit(now, 'customer.merged', nil, {from = from, into = into})
return {into, moved}
