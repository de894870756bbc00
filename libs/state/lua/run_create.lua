-- run_create: records a new run and its task nodes, deduplicating on the idempotency key.
-- KEYS: 1 run hash, 2 idempotency key (or the run hash again when there is none), 3 runs zset
-- ARGV: 1 run id, 2 flow, 3 params JSON, 4 intent, 5 source, 6 now ms, 7 has idempotency
--       key (0/1), 8 requested_by, 9 trace id, 10 comma list of task names (topological),
--       11 node key prefix ("sluice:{R}:node:"), then per task 4 values:
--       name, number of upstream tasks, comma list of downstream tasks, max attempts
-- Returns {'created'} | {'exists'} | {'duplicate', first run id}.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
if ARGV[7] == '1' then
  local first = redis.call('GET', KEYS[2])
  if first then
    redis.call('HSET', KEYS[1], 'id', ARGV[1], 'flow', ARGV[2], 'state', 'DUPLICATE',
               'dup_of', first, 'created_ms', ARGV[6], 'ended_ms', ARGV[6])
    redis.call('PEXPIRE', KEYS[1], 86400000)
    return {'duplicate', first}
  end
  redis.call('SET', KEYS[2], ARGV[1])
end
local ntasks = 0
for i = 12, #ARGV, 4 do
  ntasks = ntasks + 1
  local deps = tonumber(ARGV[i + 1])
  redis.call('HSET', ARGV[11] .. ARGV[i], 'state', 'WAITING', 'deps_left', deps,
             'down', ARGV[i + 2], 'max_attempts', ARGV[i + 3], 'total', 0, 'done', 0)
  if deps == 0 then redis.call('ZADD', 'sluice:pending', ARGV[6], ARGV[11] .. ARGV[i]) end
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'flow', ARGV[2], 'state', 'RUNNING',
           'params', ARGV[3], 'intent', ARGV[4], 'source', ARGV[5], 'created_ms', ARGV[6],
           'requested_by', ARGV[8], 'trace_id', ARGV[9], 'tasks', ARGV[10],
           'nodes_left', ntasks, 'tasks_total', 0, 'tasks_done', 0)
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
return {'created'}
