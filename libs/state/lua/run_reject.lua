-- run_reject: records that a run request was refused (unknown flow, bad parameters ...).
-- KEYS: 1 run hash, 2 runs zset   ARGV: 1 run id, 2 flow, 3 error, 4 now ms
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'flow', ARGV[2], 'state', 'REJECTED',
           'error', ARGV[3], 'created_ms', ARGV[4], 'ended_ms', ARGV[4],
           'tasks_total', 0, 'tasks_done', 0)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1
