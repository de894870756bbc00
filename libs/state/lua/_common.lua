-- _common: helpers prepended to the planner's transition scripts.

-- Marks a node SUCCEEDED, counts down its downstream nodes' pending upstreams and finishes
-- the run when it was the last node. Returns the nodes that became ready and the run state.
local function node_finished(run_key, node_prefix, task, now)
  local node_key = node_prefix .. task
  redis.call('HSET', node_key, 'state', 'SUCCEEDED')
  local ready = {}
  local down = redis.call('HGET', node_key, 'down')
  if down and down ~= '' then
    for d in string.gmatch(down, '[^,]+') do
      if redis.call('HINCRBY', node_prefix .. d, 'deps_left', -1) == 0 then
        ready[#ready + 1] = d
      end
    end
  end
  local state = 'RUNNING'
  if redis.call('HINCRBY', run_key, 'nodes_left', -1) == 0 then
    redis.call('HSET', run_key, 'state', 'SUCCEEDED', 'ended_ms', now)
    state = 'SUCCEEDED'
    ready = {}
  end
  return ready, state
end

-- Creates task instances (pairs of map index and dispatch bytes from ARGV[first]) unless
-- they exist already.
local function create_instances(ti_prefix, max_attempts, now, first)
  for i = first, #ARGV, 2 do
    local key = ti_prefix .. ARGV[i]
    if redis.call('EXISTS', key) == 0 then
      redis.call('HSET', key, 'state', 'DISPATCHED', 'attempt', 1,
                 'max_attempts', max_attempts, 'dispatch', ARGV[i + 1], 'queued_ms', now)
    end
  end
end
