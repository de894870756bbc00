-- run_cancel: ends a running run as CANCELLED and deletes every lease its tasks hold, so each
-- worker's next renewal fails and it kills the task (no result is published). Instances that
-- had not ended (running, dispatched, waiting for a retry or a slot) end CANCELLED. Later
-- results are recorded but change nothing.
-- KEYS: 1 run hash, 2 lease set of the run ("sluice:{R}:leases")
-- ARGV: 1 now ms, 2 reason, 3 key prefix of the run ("sluice:{R}:")
-- Returns 1 when cancelled, 0 when the run had already ended or does not exist.
if redis.call('HGET', KEYS[1], 'state') ~= 'RUNNING' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'CANCELLED', 'ended_ms', ARGV[1], 'error', ARGV[2])
for _, lease in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('DEL', lease)
end
redis.call('DEL', KEYS[2])
local open = {RUNNING = true, DISPATCHED = true, RETRY_WAIT = true, WAITING_SLOT = true}
local function cancel(ti)
  if open[redis.call('HGET', ti, 'state') or ''] then
    redis.call('HSET', ti, 'state', 'CANCELLED', 'finished_ms', ARGV[1], 'error', ARGV[2])
    redis.call('ZREM', 'sluice:active', ti)
  end
end
for task in string.gmatch(redis.call('HGET', KEYS[1], 'tasks') or '', '[^,]+') do
  local node = redis.call('HMGET', ARGV[3] .. 'node:' .. task, 'state', 'total')
  if node[1] == 'ACTIVE' then
    local prefix = ARGV[3] .. 'ti:' .. task .. ':'
    if redis.call('EXISTS', prefix .. '-1') == 1 then
      cancel(prefix .. '-1')
    else
      for i = 0, (tonumber(node[2]) or 0) - 1 do cancel(prefix .. i) end
    end
  end
end
run_forget(KEYS[1])
return 1
