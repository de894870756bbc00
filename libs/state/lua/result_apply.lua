-- result_apply: records task results, each once, fenced by its attempt number, in the order
-- given: every result settles and is answered exactly as it would be in a call of its own.
-- What the results of one node share is read once and written once per call: the run's
-- state and counters, the node's counters, its dispatch hash, the reaper's index and the
-- run's lease set (a fan-out's results are mostly of one node: three commands per result
-- stay, the instance's own; two for a result with nothing to delete).
-- KEYS: 1 timers zset, then per group g (from 1, results of one node in a row): 2g run hash,
--       2g+1 node hash; then per result, in order: its instance hash
-- ARGV: 1 number of groups G; per group g, from 2+6(g-1): +0 node key prefix, +1 task name,
--       +2 its number of results, +3 now ms, +4 its kind ('ok': every result SUCCEEDED with
--       no error, exit code 0, from worker +5; 'any': +5 unused); then per result, in order:
--       of an 'ok' group 4 arguments: +0 attempt, +1 output JSON, +2 started ms, +3 finished
--       ms; of an 'any' group 9: +0 attempt, +1 status (SUCCEEDED|FAILED|TIMED_OUT|
--       CANCELLED), +2 output JSON, +3 error, +4 exit code, +5 worker, +6 started ms,
--       +7 finished ms, +8 retry delay ms
-- (what the results of a node share goes once per group: a batch of 512 noop results is 5
-- strings each for Redis to read, not 17.)
-- The lease of the attempt and its concurrency slots are released once the result passes
-- the fence.
-- Returns one reply per result, {outcome, run state, ready nodes...}; outcome is 'applied',
-- 'node_done' (the node ended, SUCCEEDED or FAILED: the run state says whether the run ended
-- too), 'retry' or 'stale' (not the current attempt: nothing changed). A failure on the last
-- attempt fails the node once all its instances have ended; the run goes on with what can
-- still run (trigger rules) and ends FAILED.

local runs = {}       -- run key -> {state, done, failed (counts not written yet), base, tasks}
local nodes = {}      -- node key -> {total, done, failed, ended, d_done, d_failed}
local disp_done = {}  -- dispatch hash key -> map indexes of instances ended for good
local active_done = {} -- instance keys leaving the reaper's index
local lease_keys = {} -- leases of the results' attempts
local lease_sets = {} -- the run's lease set -> its members among lease_keys

-- base: "sluice:{R}:", the prefix of the run's keys; leases: the run's lease set; tasks:
-- task name -> task_of's record.
local function run_of(key)
  local r = runs[key]
  if not r then
    local base = string.sub(key, 1, -4)
    r = {state = redis.call('HGET', key, 'state'), done = 0, failed = 0,
         base = base, leases = base .. 'leases', tasks = {}}
    runs[key] = r
  end
  return r
end

-- What the instances of one task of run r share, worked out once per call: the length of
-- their key's prefix ("sluice:{R}:ti:<task>:", the map index follows), their dispatch hash,
-- their lease keys' prefix and the task's concurrency spec (false for none).
local function task_of(r, task)
  local t = r.tasks[task]
  if not t then
    t = {plen = #r.base + #task + 4, disp = r.base .. 'disp:' .. task,
         lease = r.base .. 'lease:' .. task .. ':',
         spec = redis.call('HGET', r.base .. 'limits', task) or false}
    r.tasks[task] = t
  end
  return t
end

local function node_of(key)
  local n = nodes[key]
  if not n then
    local h = redis.call('HMGET', key, 'total', 'done', 'failed', 'ended_ms')
    n = {total = tonumber(h[1]) or 0, done = tonumber(h[2]) or 0,
         failed = tonumber(h[3]) or 0, ended = h[4] and true or false, d_done = 0, d_failed = 0}
    nodes[key] = n
  end
  return n
end

local function write_counts(run_key, r, node_key, n)
  if n and n.d_done > 0 then redis.call('HINCRBY', node_key, 'done', n.d_done) end
  if n and n.d_failed > 0 then redis.call('HINCRBY', node_key, 'failed', n.d_failed) end
  if n then n.d_done, n.d_failed = 0, 0 end
  if r.done > 0 then redis.call('HINCRBY', run_key, 'tasks_done', r.done) end
  if r.failed > 0 then redis.call('HINCRBY', run_key, 'tasks_failed', r.failed) end
  r.done, r.failed = 0, 0
end

-- Runs cmd key members... over list, 256 members per command.
local function in_chunks(cmd, key, list)
  for i = 1, #list, 256 do
    local j = math.min(i + 255, #list)
    if key then redis.call(cmd, key, unpack(list, i, j))
    else redis.call(cmd, unpack(list, i, j)) end
  end
end

-- An instance ended for good (as instance_forget): its dispatch bytes and reaper entry go
-- with the call's last writes.
local function forget_later(ti_key, t, idx)
  local l = disp_done[t.disp]
  if not l then l = {} disp_done[t.disp] = l end
  l[#l + 1] = idx
  active_done[#active_done + 1] = ti_key
end

-- One instance of a node ended for good (as instance_ended, on the counts kept here).
local function ended(run_key, r, node_key, n, node_prefix, task, now)
  if n.ended or n.done + n.failed < n.total then return {'applied', r.state} end
  local state = 'SUCCEEDED'
  if n.failed > 0 then state = 'FAILED' end
  write_counts(run_key, r, node_key, n)
  local ready, rstate = node_ended(run_key, node_prefix, task, state, now)
  n.ended = true
  r.state = rstate
  return {'node_done', rstate, unpack(ready)}
end

-- A result of instance ti_key in group g (its fields as result_apply's arguments name them).
local function apply(g, ti_key, attempt_arg, status, output, err, exit_code, worker, started,
                     finished, delay)
  local run_key, node_key, task = g.run, g.node, g.task
  local r = run_of(run_key)
  -- (the fields a success deletes come along: most results have none of them)
  local ti = redis.call('HMGET', ti_key, 'state', 'attempt', 'max_attempts', 'dispatch',
                        'error', 'lease_call')
  if not ti[1] or tonumber(ti[2]) ~= tonumber(attempt_arg)
     or (ti[1] ~= 'RUNNING' and ti[1] ~= 'DISPATCHED') then
    redis.call('HINCRBY', run_key, 'stale_results', 1)
    return {'stale', r.state or 'MISSING'}
  end
  -- The result settles this attempt, so its lease and concurrency slots end here: the
  -- worker frees its slot as soon as the result is queued, without waiting for the delivery
  -- report and a release of its own. Key names follow the instance's:
  -- sluice:{R}:ti:<task>:<idx>. Every lease taken stores its call id (lease_acquire): an
  -- instance without one never had a lease key (an inline built-in's, ADR 25).
  local t = task_of(r, task)
  local idx = string.sub(ti_key, t.plen + 1)
  if ti[6] then
    local lease = t.lease .. idx
    lease_keys[#lease_keys + 1] = lease
    local set = lease_sets[r.leases]
    if not set then set = {} lease_sets[r.leases] = set end
    set[#set + 1] = lease
  end
  local spec = t.spec
  if spec then
    local member = string.sub(r.base, 9, -3) .. '|' .. task .. '|' .. idx .. '|' .. attempt_arg
    for tag in string.gmatch(spec, '([^,=]+)=') do
      redis.call('ZREM', 'sluice:sem:' .. tag, member)
    end
  end
  if status == 'SUCCEEDED' then
    redis.call('HSET', ti_key, 'state', 'SUCCEEDED', 'output', output, 'worker', worker,
               'started_ms', started, 'finished_ms', finished, 'exit_code', exit_code)
    if ti[4] or ti[5] or ti[6] then
      redis.call('HDEL', ti_key, 'dispatch', 'error', 'lease_call')
    end
    forget_later(ti_key, t, idx)
    r.done = r.done + 1
    if r.state ~= 'RUNNING' then return {'applied', r.state} end
    local n = node_of(node_key)
    n.done, n.d_done = n.done + 1, n.d_done + 1
    return ended(run_key, r, node_key, n, g.prefix, task, g.now)
  end
  local attempt = tonumber(ti[2])
  local max = tonumber(ti[3])
  redis.call('HSET', ti_key, 'error', err, 'exit_code', exit_code, 'worker', worker,
             'started_ms', started, 'finished_ms', finished, 'last_status', status,
             'output', output)
  if r.state == 'RUNNING' and status ~= 'CANCELLED' and attempt < max then
    local delays = redis.call('HGET', ti_key, 'retry_delays')
    redis.call('HSET', ti_key, 'state', 'RETRY_WAIT', 'attempt', attempt + 1,
               'retry_delays', (delays and (delays .. ',') or '') .. delay)
    redis.call('ZADD', KEYS[1], tonumber(g.now) + tonumber(delay),
               string.sub(r.base, 9, -3) .. '|' .. task .. '|' .. idx .. '|' .. (attempt + 1))
    return {'retry', r.state}
  end
  local final = 'FAILED'
  if status == 'TIMED_OUT' or status == 'CANCELLED' then final = status end
  redis.call('HSET', ti_key, 'state', final)
  if ti[6] then redis.call('HDEL', ti_key, 'lease_call') end
  forget_later(ti_key, t, idx)
  r.failed = r.failed + 1
  if r.state ~= 'RUNNING' then return {'applied', r.state} end
  local n = node_of(node_key)
  n.failed, n.d_failed = n.failed + 1, n.d_failed + 1
  -- The run's error names its first failure.
  redis.call('HSETNX', run_key, 'error',
             'task ' .. task .. ' failed after ' .. attempt .. ' attempt(s): ' .. err)
  return ended(run_key, r, node_key, n, g.prefix, task, g.now)
end

local replies = {}
local ngroups = tonumber(ARGV[1])
local a = 2 + 6 * ngroups -- the first result's first argument
local k = 2 + 2 * ngroups -- the first result's key
for gi = 0, ngroups - 1 do
  local at = 2 + 6 * gi
  local g = {run = KEYS[2 + 2 * gi], node = KEYS[3 + 2 * gi], prefix = ARGV[at],
             task = ARGV[at + 1], now = ARGV[at + 3]}
  if ARGV[at + 4] == 'ok' then
    local worker = ARGV[at + 5]
    for _ = 1, tonumber(ARGV[at + 2]) do
      replies[#replies + 1] = apply(g, KEYS[k], ARGV[a], 'SUCCEEDED', ARGV[a + 1], '', '0',
                                    worker, ARGV[a + 2], ARGV[a + 3], '0')
      k, a = k + 1, a + 4
    end
  else
    for _ = 1, tonumber(ARGV[at + 2]) do
      replies[#replies + 1] = apply(g, KEYS[k], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3],
                                    ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7],
                                    ARGV[a + 8])
      k, a = k + 1, a + 9
    end
  end
end
-- The writes the results share, once each.
for node_key, n in pairs(nodes) do
  if n.d_done > 0 then redis.call('HINCRBY', node_key, 'done', n.d_done) end
  if n.d_failed > 0 then redis.call('HINCRBY', node_key, 'failed', n.d_failed) end
end
for run_key, r in pairs(runs) do write_counts(run_key, r, nil, nil) end
for key, idxs in pairs(disp_done) do in_chunks('HDEL', key, idxs) end
in_chunks('ZREM', 'sluice:active', active_done)
in_chunks('DEL', nil, lease_keys)
for set, members in pairs(lease_sets) do in_chunks('SREM', set, members) end
return replies
