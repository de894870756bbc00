-- result_apply: records a task result once, fenced by the attempt number.
-- KEYS: 1 run hash, 2 node hash, 3 instance hash, 4 timers zset
-- ARGV: 1 attempt, 2 status (SUCCEEDED|FAILED|TIMED_OUT|CANCELLED), 3 output JSON, 4 error,
--       5 exit code, 6 worker, 7 started ms, 8 finished ms, 9 now ms, 10 retry delay ms,
--       11 timer member for a retry ("<R>|<task>|<idx>|<next attempt>"), 12 node key
--       prefix, 13 task name
-- The lease of the attempt and its concurrency slots are released once the result passes
-- the fence.
-- Returns {outcome, run state, ready nodes...}; outcome is 'applied', 'node_done' (the node
-- ended, SUCCEEDED or FAILED: the run state says whether the run ended too), 'retry' or
-- 'stale' (not the current attempt: nothing changed). A failure on the last attempt fails
-- the node once all its instances have ended; the run goes on with what can still run
-- (trigger rules) and ends FAILED.
local ti = redis.call('HMGET', KEYS[3], 'state', 'attempt', 'max_attempts')
if not ti[1] or tonumber(ti[2]) ~= tonumber(ARGV[1])
   or (ti[1] ~= 'RUNNING' and ti[1] ~= 'DISPATCHED') then
  redis.call('HINCRBY', KEYS[1], 'stale_results', 1)
  return {'stale', redis.call('HGET', KEYS[1], 'state') or 'MISSING'}
end
-- The result settles this attempt, so its lease and concurrency slots end here: the worker
-- frees its slot as soon as the result is queued, without waiting for the delivery report
-- and a release of its own. Key names follow the instance's: sluice:{R}:ti:<task>:<idx>.
do
  local base = string.sub(KEYS[1], 1, -4)
  local lease = base .. 'lease:' .. string.sub(KEYS[3], #base + 4)
  redis.call('DEL', lease)
  redis.call('SREM', base .. 'leases', lease)
  local spec = redis.call('HGET', base .. 'limits', ARGV[13])
  if spec then
    local member = string.match(KEYS[1], '^sluice:{(.*)}:run$') .. '|' .. ARGV[13] .. '|'
                   .. string.match(KEYS[3], ':(-?%d+)$') .. '|' .. ARGV[1]
    for tag in string.gmatch(spec, '([^,=]+)=') do
      redis.call('ZREM', 'sluice:sem:' .. tag, member)
    end
  end
end
local run_state = redis.call('HGET', KEYS[1], 'state')
if ARGV[2] == 'SUCCEEDED' then
  redis.call('HSET', KEYS[3], 'state', 'SUCCEEDED', 'output', ARGV[3], 'worker', ARGV[6],
             'started_ms', ARGV[7], 'finished_ms', ARGV[8], 'exit_code', ARGV[5])
  redis.call('HDEL', KEYS[3], 'dispatch', 'error', 'lease_call')
  instance_forget(KEYS[3])
  redis.call('HINCRBY', KEYS[1], 'tasks_done', 1)
  if run_state ~= 'RUNNING' then return {'applied', run_state} end
  redis.call('HINCRBY', KEYS[2], 'done', 1)
  return instance_ended(KEYS[1], KEYS[2], ARGV[12], ARGV[13], ARGV[9], run_state)
end
local attempt = tonumber(ti[2])
local max = tonumber(ti[3])
redis.call('HSET', KEYS[3], 'error', ARGV[4], 'exit_code', ARGV[5], 'worker', ARGV[6],
           'started_ms', ARGV[7], 'finished_ms', ARGV[8], 'last_status', ARGV[2],
           'output', ARGV[3])
if run_state == 'RUNNING' and ARGV[2] ~= 'CANCELLED' and attempt < max then
  local delays = redis.call('HGET', KEYS[3], 'retry_delays')
  redis.call('HSET', KEYS[3], 'state', 'RETRY_WAIT', 'attempt', attempt + 1,
             'retry_delays', (delays and (delays .. ',') or '') .. ARGV[10])
  redis.call('ZADD', KEYS[4], tonumber(ARGV[9]) + tonumber(ARGV[10]), ARGV[11])
  return {'retry', run_state}
end
local final = 'FAILED'
if ARGV[2] == 'TIMED_OUT' or ARGV[2] == 'CANCELLED' then final = ARGV[2] end
redis.call('HSET', KEYS[3], 'state', final)
instance_forget(KEYS[3])
redis.call('HINCRBY', KEYS[1], 'tasks_failed', 1)
if run_state ~= 'RUNNING' then return {'applied', run_state} end
redis.call('HINCRBY', KEYS[2], 'failed', 1)
-- The run's error names its first failure.
redis.call('HSETNX', KEYS[1], 'error',
           'task ' .. ARGV[13] .. ' failed after ' .. attempt .. ' attempt(s): ' .. ARGV[4])
return instance_ended(KEYS[1], KEYS[2], ARGV[12], ARGV[13], ARGV[9], run_state)
