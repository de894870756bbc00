-- lease_acquire: a worker takes the lease of a dispatched task instance for one attempt.
-- KEYS: 1 run hash, 2 instance hash, 3 lease key
-- ARGV: 1 attempt, 2 worker id, 3 ttl ms, 4 now ms
-- Returns 'ok', 'stale' (outdated dispatch: drop it) or 'busy' (someone else holds it).
local run_state = redis.call('HGET', KEYS[1], 'state')
if run_state ~= 'RUNNING' then return 'stale' end
local ti = redis.call('HMGET', KEYS[2], 'state', 'attempt')
if not ti[1] or tonumber(ti[2]) ~= tonumber(ARGV[1]) then return 'stale' end
local holder = ARGV[2] .. ':' .. ARGV[1]
if ti[1] == 'RUNNING' then
  -- A redelivery to the holder keeps its lease; anyone else must wait for the reaper,
  -- which re-dispatches with a new attempt so no two executions share a fencing token.
  if redis.call('GET', KEYS[3]) == holder then return 'ok' end
  return 'busy'
end
if ti[1] ~= 'DISPATCHED' then return 'stale' end
if not redis.call('SET', KEYS[3], holder, 'NX', 'PX', ARGV[3]) then return 'busy' end
redis.call('HSET', KEYS[2], 'state', 'RUNNING', 'worker', ARGV[2], 'started_ms', ARGV[4])
return 'ok'
