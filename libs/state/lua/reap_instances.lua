-- reap_instances: finds task instances whose execution or dispatch was lost and makes them
-- DISPATCHED again with attempt+1 (the new fencing token); safe on every planner at once.
-- KEYS: 1 active index zset ("sluice:active": instance key -> last change or check, ms)
-- ARGV: 1 now ms, 2 settle ms (members younger than this are not looked at), 3 dispatch
--       timeout ms, 4 lease grace ms, 5 limit, 6 max lost executions per instance
-- Returns a flat list: "<R>|<task>|<idx>|<attempt>|<reason>", dispatch bytes, ...
-- reason: 'dispatch_lost' (no lease and queued longer than the dispatch timeout, doubled
-- per earlier re-dispatch), 'lease_lost' (RUNNING, lease missing for longer than the
-- grace), 'lost_too_often' (the instance failed for good; dispatch bytes empty).
local now = tonumber(ARGV[1])
local settle = tonumber(ARGV[2])
local timeout = tonumber(ARGV[3])
local grace = tonumber(ARGV[4])
local max_lost = tonumber(ARGV[6])
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - settle, 'LIMIT', 0, ARGV[5])
-- check again at time t (the score is "t - settle": members are looked at settle ms later)
local function later(m, t) redis.call('ZADD', KEYS[1], t - settle, m) end
for _, m in ipairs(due) do
  local run, task, idx = string.match(m, '^sluice:{(.-)}:ti:(.+):(-?%d+)$')
  local run_key = run and ('sluice:{' .. run .. '}:run')
  if not run or redis.call('HGET', run_key, 'state') ~= 'RUNNING' then
    redis.call('ZREM', KEYS[1], m)
  else
    local ti = redis.call('HMGET', m, 'state', 'attempt', 'queued_ms', 'lost_ms', 'lost',
                          'redispatched', 'max_attempts')
    local st, attempt = ti[1], tonumber(ti[2] or '0')
    local lease_key = 'sluice:{' .. run .. '}:lease:' .. task .. ':' .. idx
    local reason = nil
    if st == 'RETRY_WAIT' or st == 'WAITING_SLOT' then
      -- the timers (sluice:timers) or the tag's waiting list own it for now; sem_wake and
      -- timers_due make it DISPATCHED with a fresh queued_ms
      later(m, now + timeout)
    elseif st == 'DISPATCHED' then
      local wait = timeout * 2 ^ math.min(tonumber(ti[6] or '0'), 5)
      local queued = tonumber(ti[3] or '0')
      if redis.call('EXISTS', lease_key) == 1 then
        later(m, now + grace)
      elseif now - queued >= wait then
        reason = 'dispatch_lost'
      else
        later(m, queued + wait)
      end
    elseif st == 'RUNNING' then
      if redis.call('EXISTS', lease_key) == 1 then
        if ti[4] then redis.call('HDEL', m, 'lost_ms') end
        later(m, now + grace)
      elseif not ti[4] then
        -- First seen without a lease: its result may be on the way (a worker releases its
        -- lease right after delivering the result); look again after the grace.
        redis.call('HSET', m, 'lost_ms', now)
        later(m, now + grace)
      elseif now - tonumber(ti[4]) >= grace then
        reason = 'lease_lost'
      else
        later(m, tonumber(ti[4]) + grace)
      end
    else
      redis.call('ZREM', KEYS[1], m) -- terminal (or unknown): nothing to watch
    end
    if reason == 'lease_lost' and tonumber(ti[5] or '0') + 1 > max_lost then
      local node_prefix = 'sluice:{' .. run .. '}:node:'
      local err = 'task ' .. task .. ' lost its worker ' .. (tonumber(ti[5] or '0') + 1) ..
                  ' time(s)'
      -- fails like a last failed attempt does in result_apply (trigger rules decide the rest;
      -- downstream nodes that became ready are started through sluice:pending)
      redis.call('HSET', m, 'state', 'FAILED', 'error', err, 'finished_ms', now)
      redis.call('HDEL', m, 'lost_ms')
      redis.call('SREM', 'sluice:{' .. run .. '}:leases', lease_key) -- lapsed, never released
      instance_forget(m)
      redis.call('HINCRBY', run_key, 'tasks_failed', 1)
      redis.call('HINCRBY', node_prefix .. task, 'failed', 1)
      redis.call('HSETNX', run_key, 'error', err)
      instance_ended(run_key, node_prefix .. task, node_prefix, task, now, 'RUNNING')
      out[#out + 1] = run .. '|' .. task .. '|' .. idx .. '|' .. attempt .. '|lost_too_often'
      out[#out + 1] = ''
    elseif reason then
      local dispatch = dispatch_get(m)
      if dispatch then
        -- the lapsed lease leaves the run's lease set; the new attempt's lease_acquire adds it
        redis.call('SREM', 'sluice:{' .. run .. '}:leases', lease_key)
        -- A lost execution does not use up a retry: max_attempts moves with the attempt.
        redis.call('HSET', m, 'state', 'DISPATCHED', 'attempt', attempt + 1,
                   'max_attempts', tonumber(ti[7] or '1') + 1, 'queued_ms', now)
        redis.call('HDEL', m, 'lost_ms')
        redis.call('HINCRBY', m, 'redispatched', 1)
        if reason == 'lease_lost' then redis.call('HINCRBY', m, 'lost', 1) end
        redis.call('HINCRBY', run_key, 'reaped', 1)
        later(m, now)
        out[#out + 1] = run .. '|' .. task .. '|' .. idx .. '|' .. (attempt + 1) .. '|' .. reason
        out[#out + 1] = dispatch
      else
        redis.call('ZREM', KEYS[1], m)
      end
    end
  end
end
return out
