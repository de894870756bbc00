-- lease_acquire: a worker takes the lease of a dispatched task instance for one attempt, and
-- with it one slot of each concurrency tag the task holds.
-- KEYS: 1 run hash, 2 instance hash, 3 lease key, 4 lease set of the run, 5 the run's
--       limits hash (task -> "tag=limit,..."), then for n tags:
--       6..5+n semaphores "sluice:sem:<tag>", 6+n..5+2n waiting lists
--       "sluice:semwait:<tag>" (holder -> us it started waiting), 6+2n "sluice:semtags"
--       (only when n > 0), then optionally the worker's queue's index of waiting dispatches
--       "sluice:queued:<queue>" (ADR 23), which the instance leaves whatever the answer
-- ARGV: 1 attempt, 2 worker id, 3 ttl ms, 4 now ms, 5 n, 6 slot holder
--       "<R>|<task>|<idx>|<attempt>", 7..6+n limits, 7+n..6+2n tag names, 7+2n task name,
--       8+2n the task's limits entry these tags were read from ("" for none), 9+2n the
--       call's id (the same call made again after its reply was lost repeats it)
-- Returns 'ok', 'stale' (outdated dispatch: drop it), 'held' (the caller holds this lease
-- already: a copy of what it runs or ran, drop it), 'busy' (someone else holds it),
-- 'full' (a tag has no free slot: the instance becomes WAITING_SLOT in that tag's list until
-- the planner re-dispatches it with a reserved slot; drop the dispatch), or 'tags:<entry>'
-- when the task's limits entry is not ARGV[8+2n]: nothing done, call again with its tags
-- (a worker asks as untagged first, so most leases take one call, not a read and a call).
local n = tonumber(ARGV[5]) or 0
local spec = redis.call('HGET', KEYS[5], ARGV[7 + 2 * n]) or ''
if spec ~= ARGV[8 + 2 * n] then return 'tags:' .. spec end
local member = ARGV[6]
local base = 5 + (n > 0 and 2 * n + 1 or 0)
if #KEYS > base then redis.call('ZREM', KEYS[#KEYS], KEYS[2]) end

-- Frees slots reserved for this holder (a woken dispatch that turned out stale or full).
local function drop_slots()
  for i = 1, n do redis.call('ZREM', KEYS[5 + i], member) end
end

local run_state = redis.call('HGET', KEYS[1], 'state')
if run_state ~= 'RUNNING' then drop_slots() return 'stale' end
local ti = redis.call('HMGET', KEYS[2], 'state', 'attempt', 'lease_call')
if not ti[1] or tonumber(ti[2]) ~= tonumber(ARGV[1]) then drop_slots() return 'stale' end
local holder = ARGV[2] .. ':' .. ARGV[1]
if ti[1] == 'RUNNING' then
  -- The lease stays until the planner records the result, so a copy reaching its holder
  -- (a redelivery, a re-dispatch after a planner restart) may come after the task ended
  -- there: 'held', or one attempt would run twice. Only this very call made again (its
  -- reply was lost and the client resent it) finds the id it wrote: 'ok'. Anyone else
  -- waits for the reaper, which re-dispatches with a new attempt so no two executions
  -- share a fencing token.
  if redis.call('GET', KEYS[3]) == holder then
    if ti[3] == ARGV[9 + 2 * n] then return 'ok' end
    return 'held'
  end
  return 'busy'
end
if ti[1] ~= 'DISPATCHED' then drop_slots() return 'stale' end
if redis.call('EXISTS', KEYS[3]) == 1 then return 'busy' end

local now = 0
if n > 0 then
  local t = redis.call('TIME')
  local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2]) -- waiting order, exact in a double
  now = math.floor(now_us / 1000)
  for i = 1, n do
    local sem, wait = KEYS[5 + i], KEYS[5 + n + i]
    redis.call('ZREMRANGEBYSCORE', sem, '-inf', now)
    -- A slot reserved for this holder counts as ours; otherwise a free slot is taken only
    -- when nobody waits for the tag (first come, first served).
    if not redis.call('ZSCORE', sem, member) then
      if redis.call('ZCARD', sem) >= tonumber(ARGV[6 + i])
         or redis.call('ZCARD', wait) > 0 then
        drop_slots()
        redis.call('ZADD', wait, 'NX', now_us, member)
        redis.call('HSET', KEYS[6 + 2 * n], ARGV[6 + n + i], ARGV[6 + i])
        -- WAITING_SLOT: not the reaper's business (no dispatch is in flight) until
        -- sem_wake makes it DISPATCHED again.
        redis.call('HSET', KEYS[2], 'state', 'WAITING_SLOT', 'waiting_for', ARGV[6 + n + i])
        return 'full'
      end
    end
  end
end

redis.call('SET', KEYS[3], holder, 'PX', ARGV[3])
redis.call('SADD', KEYS[4], KEYS[3])
for i = 1, n do
  redis.call('ZADD', KEYS[5 + i], now + tonumber(ARGV[3]), member)
end
redis.call('HSET', KEYS[2], 'state', 'RUNNING', 'worker', ARGV[2], 'started_ms', ARGV[4],
           'lease_call', ARGV[9 + 2 * n])
redis.call('HDEL', KEYS[2], 'waiting_for')
return 'ok'
