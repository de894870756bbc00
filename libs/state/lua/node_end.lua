-- node_end: ends a WAITING node without running it: SKIPPED (its when: is false, or an
-- upstream was skipped), UPSTREAM_FAILED (an upstream failed) or FAILED (its when:, route:
-- or templates cannot be evaluated). One instance "<ti prefix>-1" is recorded in that state
-- with the reason, so that `sluice status` lists it; the run moves on as after any node.
-- KEYS: 1 run hash, 2 node hash, 3 instance hash ("sluice:{R}:ti:<task>:-1")
-- ARGV: 1 task, 2 state, 3 reason, 4 now ms, 5 node key prefix ("sluice:{R}:node:")
-- Returns {'finished', run state, ready...} | {'stale'} (not WAITING) | {'ended', run state}.
local run_state = redis.call('HGET', KEYS[1], 'state')
if run_state ~= 'RUNNING' then return {'ended', run_state or 'MISSING'} end
redis.call('ZREM', 'sluice:pending', KEYS[2])
if redis.call('HGET', KEYS[2], 'state') ~= 'WAITING' then return {'stale'} end
redis.call('HSET', KEYS[3], 'state', ARGV[2], 'attempt', 0, 'max_attempts', 0,
           'error', ARGV[3], 'finished_ms', ARGV[4])
-- total 1: the one instance readers (sluice status) look for; 'reason' marks a node that
-- ran nothing, so a mapped one has no outputs.
redis.call('HSET', KEYS[2], 'reason', ARGV[3], 'total', 1)
if ARGV[2] == 'FAILED' then
  redis.call('HINCRBY', KEYS[1], 'tasks_failed', 1)
  redis.call('HSETNX', KEYS[1], 'error', ARGV[3]) -- the reason names the task
end
local ready, state = node_ended(KEYS[1], ARGV[5], ARGV[1], ARGV[2], ARGV[4])
return {'finished', state, unpack(ready)}
