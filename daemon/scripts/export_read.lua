-- export_read.lua: one page of the warehouse export stream 'xs' (docs/EXPORT.md).
-- ARGV[1] cursor (the last entry id the reader has, '0' or '' for the start), ARGV[2] page
-- size. Returns {oldest id or '', entries...} where each entry is {id, flat fields}; the
-- daemon answers 410 when the cursor is older than the oldest entry kept (data trimmed).
local cur, n = ARGV[1], tonumber(ARGV[2])
local first = redis.call('XRANGE', B .. 'xs', '-', '+', 'COUNT', 1)
local oldest = first[1] and first[1][1] or ''
local start = (cur == '' or cur == '0') and '-' or '(' .. cur
return {oldest, redis.call('XRANGE', B .. 'xs', start, '+', 'COUNT', n)}
