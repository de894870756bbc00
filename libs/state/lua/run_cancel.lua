-- run_cancel: ends a running run as CANCELLED; later results are recorded but change nothing.
-- KEYS: 1 run hash   ARGV: 1 now ms, 2 reason
-- Returns 1 when cancelled, 0 when the run had already ended or does not exist.
if redis.call('HGET', KEYS[1], 'state') ~= 'RUNNING' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'CANCELLED', 'ended_ms', ARGV[1], 'error', ARGV[2])
return 1
