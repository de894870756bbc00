-- ti_add: adds a further batch of instances to an ACTIVE node (big fan-outs are written
-- batch by batch after node_start, each batch its own script call so that Redis is never
-- blocked for long). Instances that exist already are left as they are.
-- KEYS: 1 run hash, 2 node hash
-- ARGV: 1 instance key prefix, 2 max attempts, 3 now ms, then pairs: map index, dispatch
-- Returns {'added', idx...} (the instances created by this call), {'added_all'} when it
-- created every one given (a fresh batch: no list of a thousand indexes to send back), or
-- {'stopped'} when the node is not ACTIVE or the run has ended.
if redis.call('HGET', KEYS[1], 'state') ~= 'RUNNING' then return {'stopped'} end
if redis.call('HGET', KEYS[2], 'state') ~= 'ACTIVE' then return {'stopped'} end
local created = create_instances(ARGV[1], ARGV[2], ARGV[3], 4)
node_written(KEYS[2], #created, ARGV[3])
if #created == (#ARGV - 3) / 2 then return {'added_all'} end
return {'added', unpack(created)}
