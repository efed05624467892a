-- report_rebuild.lua: the day counters' fold, and `omniccd reports rebuild --from-export`
-- (docs/ANALYTICS.md). Bounded steps, called in a loop:
--   ARGV[1] = 'fold', ARGV[2] = most hour-hash fields to read
--     -> adds every hour that ended at least FOLD_DELAY_MS ago and is not yet folded (the
--        mark 'rdays' 'folded' on) into the day counters rd:<day>:<dim>, oldest first, and
--        moves the mark past it; {mark, hours folded, fields read, hours still due}. Run by
--        every daemon instance (api_reports.c) and `omniccd reports fold`: an hour is
--        folded once, by whichever call moves the mark past it.
-- The rebuild from the export recomputes the hour counters rp:* (and clears the day
-- counters rd:*) from the facts of the export stream 'xs' (written by rollup() next to the
-- counters, from the same deltas):
--   ARGV[1] = 'clear', ARGV[2] = SCAN cursor  -> deletes up to 1000 rp:* keys; {next cursor, n}
--   ARGV[1] = 'replay', ARGV[2] = stream id   -> applies up to 2000 facts after it; {last id, n}
-- Stop ingest while it runs: facts written between the clear and the replay are counted
-- once either way, but counters changing during the clear are lost.
local op, cur = ARGV[1], ARGV[2]
-- an hour is folded this long after its end: the figures of its interactions answered or
-- handled within that time land in its hour hash only, not in the day counters too
local FOLD_DELAY_MS = 600000
local DIMS = {'channel', 'queue', 'segment', 'branch', 'agent'}
if op == 'fold' then
  local now = now_ms()
  local rk = B .. 'rdays'
  local mark = tonumber(redis.call('HGET', rk, 'folded'))
  if not mark then return {0, 0, 0, 0} end
  local budget = tonumber(cur) or 50000
  local hours, fields = 0, 0
  while (mark + 1) * 3600000 + FOLD_DELAY_MS <= now and fields < budget and hours < 1000 do
    local day = redis.call('HGET', rk, tostring(mark))
    local flat = day and redis.call('HGETALL', B .. 'rp:' .. mark) or {}
    fields = fields + #flat / 2
    -- summed per day field first (sums[dim][value][metric]: the field names are made once
    -- each), so a busy hour's ~7,000 fields become ~1,500 HINCRBY
    local sums = {{}, {}, {}, {}, {}}
    for i = 1, #flat, 2 do
      local d = {string.match(flat[i], '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')}
      local m = d[6]
      if m then
        local n = tonumber(flat[i + 1])
        for j = 1, 5 do
          local v = d[j]
          if j < 4 or v ~= '-' then -- branch and agent '-' are not kept per day
            local sv = sums[j][v]
            if not sv then sv = {}; sums[j][v] = sv end
            sv[m] = (sv[m] or 0) + n
          end
        end
      end
    end
    for j = 1, 5 do
      local key = day and (B .. 'rd:' .. day .. ':' .. DIMS[j])
      for v, sv in pairs(sums[j]) do
        for m, n in pairs(sv) do redis.call('HINCRBY', key, v .. '|' .. m, n) end
      end
    end
    mark = mark + 1
    hours = hours + 1
  end
  if hours > 0 then redis.call('HSET', rk, 'folded', mark) end
  local due = math.floor((now - FOLD_DELAY_MS) / 3600000) - mark
  return {mark, hours, fields, due > 0 and due or 0}
elseif op == 'clear' then
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
