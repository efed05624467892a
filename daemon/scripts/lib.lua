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

local function history_add(case_id, now, fields)
  local args = {B .. 'case:' .. case_id .. ':hist', 'MAXLEN', '~', '100000', '*', 'at', tostring(now)}
  for i = 1, #fields do args[#args + 1] = fields[i] end
  return redis.call('XADD', unpack(args))
end

-- the global event stream, read by every daemon instance for SSE fan-out
local function event_add(now, fields)
  local args = {B .. 'events', 'MAXLEN', '~', '200000', '*', 'at', tostring(now)}
  for i = 1, #fields do args[#args + 1] = fields[i] end
  return redis.call('XADD', unpack(args))
end

local function fail(code, msg)
  return redis.error_reply(code .. ' ' .. msg)
end
