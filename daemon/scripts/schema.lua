-- schema.lua: the version of the Redis data layout, checked on every connect before the
-- connection serves anything (daemon/store.c; docs/OPERATIONS.md, "Upgrade").
-- Key `schema` (hash): `version` (the layout written), `compat` (the oldest layout version
-- whose omniccd can still run on it: a step that only adds keys or fields keeps it, a step
-- that removes or reshapes something raises it), and when it was created or last migrated.
-- ARGV[1] = the newest layout this omniccd knows, ARGV[2] = that layout's compat.
-- Returns {status, version, compat}: status 'ok' (serve), 'migrate' (run the step from
-- `version`, then check again) or 'newer' (a layout this omniccd cannot read: refuse).
local S = B .. 'schema'
local want, want_compat = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', S, 'version', 'compat')
if not v[1] then
  -- No version: an empty database, or one written before layouts carried a version
  -- (layout 0). Every omniccd writes routing:conf on connect, so any of these means data.
  for _, k in ipairs({'routing:conf', 'seq:ix', 'seq:case', 'seq:cust', 'agents', 'events'}) do
    if redis.call('EXISTS', B .. k) == 1 then return {'migrate', 0, 0} end
  end
  redis.call('HSET', S, 'version', want, 'compat', want_compat, 'created_at', now_ms())
  return {'ok', want, want_compat}
end
local version = tonumber(v[1])
local compat = tonumber(v[2] or v[1])
if not version or not compat or version < 0 or compat > version then
  return redis.error_reply('ERR ' .. S .. ' is damaged: version ' .. tostring(v[1]) ..
                           ', compat ' .. tostring(v[2]))
end
if version < want then return {'migrate', version, compat} end
if version > want and compat > want then return {'newer', version, compat} end
return {'ok', version, compat}
