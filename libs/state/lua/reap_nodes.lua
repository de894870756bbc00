-- reap_nodes: finds nodes that became ready (all upstreams done, or a root of a new run)
-- but were never started, e.g. the planner died between result_apply and node_start, and
-- nodes started but not fully written (the planner died in the middle of a big fan-out).
-- KEYS: 1 pending index zset ("sluice:pending": node key -> time it became ready, ms)
-- ARGV: 1 now ms, 2 settle ms, 3 limit
-- Returns a flat list: run id, task, run id, task ... (start them; node_start is idempotent).
local now = tonumber(ARGV[1])
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]), 'LIMIT',
                       0, ARGV[3])
for _, m in ipairs(due) do
  local run, task = string.match(m, '^sluice:{(.-)}:node:(.+)$')
  local node = redis.call('HMGET', m, 'state', 'deps_left', 'written', 'total')
  -- ready and never started, or started and left half-written (node_start resumes it)
  local stuck = (node[1] == 'WAITING' and tonumber(node[2] or '1') == 0) or
                (node[1] == 'ACTIVE' and node[3] and tonumber(node[3]) < tonumber(node[4]))
  if not run or redis.call('HGET', 'sluice:{' .. run .. '}:run', 'state') ~= 'RUNNING'
     or not stuck then
    redis.call('ZREM', KEYS[1], m)
  else
    -- Looked at again one settle period later should this planner die as well.
    redis.call('ZADD', KEYS[1], now, m)
    out[#out + 1] = run
    out[#out + 1] = task
  end
end
return out
