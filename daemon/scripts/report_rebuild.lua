-- report_rebuild.lua: `omniccd reports rebuild --from-export` (docs/ANALYTICS.md).
-- Recomputes the hour counters rp:* (and clears the day counters rd:*) from the facts of
-- the export stream 'xs' (written by rollup() next to the counters, from the same deltas).
-- Bounded steps, called in a loop by the daemon:
--   ARGV[1] = 'clear', ARGV[2] = SCAN cursor  -> deletes up to 1000 rp:* keys; {next cursor, n}
--   ARGV[1] = 'replay', ARGV[2] = stream id   -> applies up to 2000 facts after it; {last id, n}
-- Stop ingest while it runs: facts written between the clear and the replay are counted
-- once either way, but counters changing during the clear are lost.
local op, cur = ARGV[1], ARGV[2]
if op == 'clear' then
  -- the day counters (rd:*) go too and are not replayed: until a `reports rebuild` from the
  -- histories, every day is read from the hour hashes ('from' beyond any day)
  if cur == '0' then redis.call('HSET', B .. 'rdays', 'from', '1e15') end
  local r = redis.call('SCAN', cur, 'MATCH', B .. 'r[pd]:*', 'COUNT', 1000)
  for _, k in ipairs(r[2]) do redis.call('DEL', k) end
  return {r[1], #r[2]}
elseif op == 'replay' then
  local start = cur == '0' and '-' or '(' .. cur
  local es = redis.call('XRANGE', B .. 'xs', start, '+', 'COUNT', 2000)
  local last, n = cur, 0
  for _, e in ipairs(es) do
    last = e[1]
    local f = hash_to_table(e[2])
    if f.kind == 'fact' then
      n = n + 1
      for k, v in string.gmatch(f.m or '', '([%w_]+):(%-?%d+)') do
        redis.call('HINCRBY', B .. 'rp:' .. f.hour, f.dims .. '|' .. k, tonumber(v))
      end
    end
  end
  return {last, #es, n}
end
return fail('ERR_INVALID', 'unknown operation')
