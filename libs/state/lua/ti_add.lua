-- ti_add: adds a further batch of instances to an ACTIVE node (big fan-outs are written in
-- batches after node_start).
-- KEYS: 1 run hash, 2 node hash
-- ARGV: 1 instance key prefix, 2 max attempts, 3 now ms, then pairs: map index, dispatch
-- Returns 1, or 0 when the node is not ACTIVE or the run has ended.
if redis.call('HGET', KEYS[1], 'state') ~= 'RUNNING' then return 0 end
if redis.call('HGET', KEYS[2], 'state') ~= 'ACTIVE' then return 0 end
create_instances(ARGV[1], ARGV[2], ARGV[3], 4)
return 1
