-- run_fail: ends a running run as FAILED for a reason found by the planner (a map that is
-- not a list, lists of different lengths ...).
-- KEYS: 1 run hash   ARGV: 1 now ms, 2 error
-- Returns 1 when failed now, 0 when the run had already ended or does not exist.
if redis.call('HGET', KEYS[1], 'state') ~= 'RUNNING' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'FAILED', 'ended_ms', ARGV[1], 'error', ARGV[2])
run_forget(KEYS[1]) -- instances still out may report; nothing re-sends them any more
return 1
