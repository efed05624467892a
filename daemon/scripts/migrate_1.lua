-- migrate_1.lua: layout 0 -> 1. Layout 0 is every deployment from before the layout
-- carried a version; layout 1 is exactly layout 0 plus the `schema` hash itself. So there is
-- nothing to change in the data: this step only records the version, and compat stays 0
-- (an omniccd that predates versions runs on layout 1 as it did on layout 0).
--
-- How every step is written (docs/OPERATIONS.md, "Upgrade"): it checks the version it
-- starts from, because another omniccd may have migrated meanwhile (then it does nothing);
-- it changes the data and records its version in this one atomic call; a step that must
-- rewrite many keys does a bounded batch per call and records its version only with the
-- last one. It returns the layout version after the call.
local S = B .. 'schema'
local cur = tonumber(redis.call('HGET', S, 'version') or '0')
if cur ~= 0 then return cur end
redis.call('HSET', S, 'version', 1, 'compat', 0, 'migrated_from', 0, 'migrated_at', now_ms())
return 1
