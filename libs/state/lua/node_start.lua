-- node_start: a node whose upstreams are done becomes ACTIVE with its instances.
-- KEYS: 1 run hash, 2 node hash
-- ARGV: 1 task, 2 total instances, 3 now ms, 4 node key prefix, 5 instance key prefix
--       ("sluice:{R}:ti:<task>:"), 6 max attempts, 7 guard ('' or 'ready'), then pairs: map
--       index, dispatch bytes (some or none of the instances: ti_add writes the others,
--       batch by batch)
-- Returns {'started'} | {'finished', run state, ready...}
-- (zero instances) | {'resume'} (started, but fewer instances than its total written yet:
-- write them with ti_add) | {'stale'} (already started) | {'ended', run state}.
-- Guard 'ready' (a start sent in the same round trip as the result of the node's only
-- upstream, expanded as if every upstream succeeded, ADR 30): only a WAITING node with no
-- upstream left, none failed and none skipped starts; any other answers {'unready'} and
-- changes nothing.
local run_state = redis.call('HGET', KEYS[1], 'state')
if run_state ~= 'RUNNING' then return {'ended', run_state or 'MISSING'} end
if ARGV[7] == 'ready' then
  local g = redis.call('HMGET', KEYS[2], 'state', 'deps_left', 'up_failed', 'up_skipped')
  if g[1] ~= 'WAITING' or (tonumber(g[2]) or 0) ~= 0 or (tonumber(g[3]) or 0) ~= 0
     or (tonumber(g[4]) or 0) ~= 0 then
    return {'unready'}
  end
end
local node = redis.call('HMGET', KEYS[2], 'state', 'written', 'total')
if node[1] == 'ACTIVE' and node[2] and tonumber(node[2]) < tonumber(node[3]) then
  redis.call('ZADD', 'sluice:pending', ARGV[3], KEYS[2])
  return {'resume'}
end
redis.call('ZREM', 'sluice:pending', KEYS[2])
if node[1] ~= 'WAITING' then return {'stale'} end
local total = tonumber(ARGV[2])
redis.call('HSET', KEYS[2], 'state', 'ACTIVE', 'total', total, 'done', 0, 'written', 0)
redis.call('HINCRBY', KEYS[1], 'tasks_total', total)
local created = create_instances(ARGV[5], ARGV[6], ARGV[3], 8)
node_written(KEYS[2], #created, ARGV[3])
if total == 0 then
  local ready, state = node_finished(KEYS[1], ARGV[4], ARGV[1], ARGV[3])
  return {'finished', state, unpack(ready)}
end
return {'started'}
