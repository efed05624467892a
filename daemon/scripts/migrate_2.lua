-- migrate_2.lua: layout 1 -> 2. Layout 2 routes through pools (docs/ROUTING.md, "Pools":
-- the index of available agents is per pool of queues, `pool:<P>:*`, no longer per queue,
-- `q:<Q>:avail:*`, `q:<Q>:agents`) and folds ended report hours into day counters off the
-- ingest path (docs/ANALYTICS.md). An omniccd of layout 1 would keep writing the per-queue
-- indexes nobody reads and count folded hours twice, so compat becomes 2: it refuses to
-- start on layout 2 (stop every older instance before starting this one).
-- The routing data itself moves once the daemon has written its configuration, which names
-- the pools: the sweep (sweep.lua) puts each agent of the data set in its pools, a batch at
-- a time, and offers those available the work waiting; this step only starts that walk.
local S = B .. 'schema'
local cur = tonumber(redis.call('HGET', S, 'version') or '0')
if cur ~= 1 then return cur end
redis.call('DEL', B .. 'pools:migrated', B .. 'pools:migrate_from')
redis.call('HSET', S, 'version', 2, 'compat', 2, 'migrated_from', 1, 'migrated_at', now_ms())
return 2
