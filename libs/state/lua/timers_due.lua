-- timers_due: pops retries that are due and marks their instances DISPATCHED again.
-- KEYS: 1 timers zset   ARGV: 1 now ms, 2 limit
-- Returns a flat list: member, dispatch bytes, member, dispatch bytes ...
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  local run, task, idx, attempt = string.match(m, '^([^|]+)|([^|]+)|([^|]+)|([^|]+)$')
  if run then
    local ti = 'sluice:{' .. run .. '}:ti:' .. task .. ':' .. idx
    local st = redis.call('HMGET', ti, 'state', 'attempt')
    local dispatch = nil
    if redis.call('HGET', 'sluice:{' .. run .. '}:run', 'state') == 'RUNNING'
       and st[1] == 'RETRY_WAIT' and st[2] == attempt then
      dispatch = dispatch_get(ti)
    end
    if dispatch then
      redis.call('HSET', ti, 'state', 'DISPATCHED', 'queued_ms', ARGV[1])
      redis.call('ZADD', 'sluice:active', ARGV[1], ti) -- re-sent by the reaper if lost
      out[#out + 1] = m
      out[#out + 1] = dispatch
    end
  end
end
return out
