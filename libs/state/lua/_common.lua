-- _common: helpers prepended to the planner's transition scripts.

-- Where the TaskDispatch bytes of an instance live: one hash per node,
-- sluice:{R}:disp:<task> (map index -> bytes), never the instance hash, whose values stay
-- within hash-max-listpack-value (64 bytes) so that it stays a listpack (a third of the memory
-- of a hashtable, which a hash never turns back from). Returns that key, the map index and
-- the run's key prefix "sluice:{R}:" (nil when ti_key is not an instance key).
local function disp_of(ti_key)
  local base, task, idx = string.match(ti_key, '^(sluice:{.-}:)ti:(.+):(-?%d+)$')
  if not base then return nil end
  return base .. 'disp:' .. task, idx, base
end

-- The stored dispatch of an instance, or nil. Instances written before the bytes moved out
-- (a planner upgraded mid-run) still hold them in their `dispatch` field.
local function dispatch_get(ti_key)
  local key, idx = disp_of(ti_key)
  local d = key and redis.call('HGET', key, idx)
  if d then return d end
  return redis.call('HGET', ti_key, 'dispatch') or nil
end

-- An instance ended for good: nothing re-sends it any more, so its dispatch bytes and its
-- entry in the reaper's index go.
local function instance_forget(ti_key)
  local key, idx = disp_of(ti_key)
  if key then redis.call('HDEL', key, idx) end
  redis.call('ZREM', 'sluice:active', ti_key)
end

-- A run ended (any way): drops what only in-flight work needed, so that a finished run
-- keeps its run, node and instance hashes and nothing else: the dispatch hashes of every
-- task (normally emptied instance by instance already), nodes left in the reaper's pending
-- index (a cancelled run's) and the set of its leases (the leases themselves lapse, or go
-- with their result).
local function run_forget(run_key)
  local base = string.sub(run_key, 1, -4)
  for task in string.gmatch(redis.call('HGET', run_key, 'tasks') or '', '[^,]+') do
    redis.call('UNLINK', base .. 'disp:' .. task)
    redis.call('ZREM', 'sluice:pending', base .. 'node:' .. task)
  end
  redis.call('DEL', base .. 'leases')
end

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
    run_forget(run_key)
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
-- they exist already; the bytes go to the node's dispatch hash (see disp_of). One EXISTS
-- over the whole batch: when none exists (all but a resumed or repeated batch), each
-- instance costs one HSET, and the reaper's index and the dispatch hash take the batch in
-- a few commands.
local function create_instances(ti_prefix, max_attempts, now, first)
  local disp = disp_of(ti_prefix .. '0')
  local created = {}
  local keys = {}
  for i = first, #ARGV, 2 do keys[#keys + 1] = ti_prefix .. ARGV[i] end
  local fresh = true
  for i = 1, #keys, 256 do
    if redis.call('EXISTS', unpack(keys, i, math.min(i + 255, #keys))) > 0 then
      fresh = false
      break
    end
  end
  local pairs_ = {} -- dispatch fields, written 256 at a time
  local active = {} -- reaper's index entries, written 256 at a time
  for i = first, #ARGV, 2 do
    local key = keys[(i - first) / 2 + 1]
    if fresh or redis.call('EXISTS', key) == 0 then
      redis.call('HSET', key, 'state', 'DISPATCHED', 'attempt', '1',
                 'max_attempts', max_attempts, 'queued_ms', now)
      created[#created + 1] = ARGV[i]
      pairs_[#pairs_ + 1] = ARGV[i]
      pairs_[#pairs_ + 1] = ARGV[i + 1]
      -- watched by the reaper until it ends
      active[#active + 1] = now
      active[#active + 1] = key
      if #pairs_ >= 512 then
        redis.call('HSET', disp, unpack(pairs_))
        redis.call('ZADD', 'sluice:active', unpack(active))
        pairs_, active = {}, {}
      end
    end
  end
  if #pairs_ > 0 then
    redis.call('HSET', disp, unpack(pairs_))
    redis.call('ZADD', 'sluice:active', unpack(active))
  end
  return created
end

-- Counts instances written to node_key; while fewer than its total are written the node
-- stays in the reaper's pending index (refreshed at each batch), so that a planner dying
-- half-way through a big fan-out leaves a node that another planner resumes.
local function node_written(node_key, n, now)
  local written = redis.call('HINCRBY', node_key, 'written', n)
  if written >= tonumber(redis.call('HGET', node_key, 'total') or '0') then
    redis.call('ZREM', 'sluice:pending', node_key)
  else
    redis.call('ZADD', 'sluice:pending', now, node_key)
  end
end
