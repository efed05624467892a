-- agent_token.lua: ARGV[1] agent, ARGV[2] 'add' | 'revoke', ARGV[3] token sha (add).
-- Tokens are stored as SHA-256 only; the token itself is shown once, at creation.
local aid, op = ARGV[1], ARGV[2]
local tk = B .. 'agent:' .. aid .. ':tokens'
if redis.call('EXISTS', B .. 'agent:' .. aid) == 0 then return fail('ERR_NOT_FOUND', 'no agent ' .. aid) end
if op == 'add' then
  if redis.call('SCARD', tk) >= 20 then return fail('ERR_CONFLICT', 'agent has 20 tokens; revoke some') end
  redis.call('SET', B .. 'token:' .. ARGV[3], aid)
  redis.call('SADD', tk, ARGV[3])
  return 1
end
local n = 0
for _, sha in ipairs(redis.call('SMEMBERS', tk)) do
  redis.call('DEL', B .. 'token:' .. sha)
  n = n + 1
end
redis.call('DEL', tk)
return n
