-- sem_wake: hands the free slots of one concurrency tag to its oldest waiters that still want
-- one (run RUNNING, instance WAITING_SLOT at the waiting attempt): each becomes DISPATCHED
-- again with a slot reserved for it, for the planner to re-dispatch; waiters that no longer
-- want a slot are dropped. Forgets the tag once nobody waits.
-- KEYS: 1 semaphore "sluice:sem:<tag>", 2 waiting list "sluice:semwait:<tag>",
--       3 "sluice:semtags", 4 the reaper's index "sluice:active"
-- ARGV: 1 tag, 2 reservation ms (how long a woken dispatch may take to reach a worker)
-- Returns the woken holders "<R>|<task>|<idx>|<attempt>", oldest first.
local limit = tonumber(redis.call('HGET', KEYS[3], ARGV[1]))
if not limit then return {} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local free = limit - redis.call('ZCARD', KEYS[1])
local woken = {}
local scanned = 0
while free > 0 and scanned < 1000 do
  local m = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not m then break end
  redis.call('ZREM', KEYS[2], m)
  scanned = scanned + 1
  local run, task, idx, attempt = string.match(m, '^([^|]+)|([^|]+)|(-?%d+)|(%d+)$')
  if run and redis.call('HGET', 'sluice:{' .. run .. '}:run', 'state') == 'RUNNING' then
    local ti_key = 'sluice:{' .. run .. '}:ti:' .. task .. ':' .. idx
    local ti = redis.call('HMGET', ti_key, 'state', 'attempt')
    if ti[1] == 'WAITING_SLOT' and tonumber(ti[2]) == tonumber(attempt) then
      redis.call('HSET', ti_key, 'state', 'DISPATCHED', 'queued_ms', now)
      redis.call('ZADD', KEYS[4], now, ti_key) -- the reaper re-sends it if the dispatch is lost
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), m)
      woken[#woken + 1] = m
      free = free - 1
    end
  end
end
if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('HDEL', KEYS[3], ARGV[1]) end
return woken
