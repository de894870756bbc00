-- _common: helpers prepended to the planner's transition scripts.

-- Ends a node in state (SUCCEEDED, FAILED, SKIPPED or UPSTREAM_FAILED): tells each downstream
-- node how it ended (up_failed / up_skipped, read by its trigger rule), counts down their
-- pending upstreams and ends the run when it was the last node: FAILED when any node FAILED,
-- else SUCCEEDED. Returns the nodes that became ready and the run state.
local function node_ended(run_key, node_prefix, task, state, now)
  local node_key = node_prefix .. task
  redis.call('HSET', node_key, 'state', state, 'ended_ms', now)
  local seen = nil
  if state == 'FAILED' or state == 'UPSTREAM_FAILED' then seen = 'up_failed'
  elseif state == 'SKIPPED' then seen = 'up_skipped' end
  if state == 'FAILED' then redis.call('HINCRBY', run_key, 'nodes_failed', 1) end
  local ready = {}
  local down = redis.call('HGET', node_key, 'down')
  if down and down ~= '' then
    for d in string.gmatch(down, '[^,]+') do
      if seen then redis.call('HINCRBY', node_prefix .. d, seen, 1) end
      if redis.call('HINCRBY', node_prefix .. d, 'deps_left', -1) == 0 then
        ready[#ready + 1] = d
        -- until node_start runs; the reaper starts it if the planner dies first
        redis.call('ZADD', 'sluice:pending', now, node_prefix .. d)
      end
    end
  end
  local run_state = 'RUNNING'
  if redis.call('HINCRBY', run_key, 'nodes_left', -1) == 0 then
    run_state = 'SUCCEEDED'
    if tonumber(redis.call('HGET', run_key, 'nodes_failed') or '0') > 0 then
      run_state = 'FAILED'
    end
    redis.call('HSET', run_key, 'state', run_state, 'ended_ms', now)
    ready = {}
  end
  return ready, run_state
end

-- Marks a node SUCCEEDED and moves the run on (see node_ended).
local function node_finished(run_key, node_prefix, task, now)
  return node_ended(run_key, node_prefix, task, 'SUCCEEDED', now)
end

-- One instance of a node ended for good (succeeded, or failed its last attempt; done and
-- failed already counted): the node ends once all its instances have, FAILED if any failed.
-- Returns a result_apply reply.
local function instance_ended(run_key, node_key, node_prefix, task, now, run_state)
  local n = redis.call('HMGET', node_key, 'total', 'done', 'failed', 'ended_ms')
  if n[4] or (tonumber(n[2]) or 0) + (tonumber(n[3]) or 0) < (tonumber(n[1]) or 0) then
    return {'applied', run_state}
  end
  local state = 'SUCCEEDED'
  if (tonumber(n[3]) or 0) > 0 then state = 'FAILED' end
  local ready, rstate = node_ended(run_key, node_prefix, task, state, now)
  return {'node_done', rstate, unpack(ready)}
end

-- Creates task instances (pairs of map index and dispatch bytes from ARGV[first]) unless
-- they exist already.
local function create_instances(ti_prefix, max_attempts, now, first)
  for i = first, #ARGV, 2 do
    local key = ti_prefix .. ARGV[i]
    if redis.call('EXISTS', key) == 0 then
      redis.call('HSET', key, 'state', 'DISPATCHED', 'attempt', 1,
                 'max_attempts', max_attempts, 'dispatch', ARGV[i + 1], 'queued_ms', now)
      redis.call('ZADD', 'sluice:active', now, key) -- watched by the reaper until it ends
    end
  end
end
