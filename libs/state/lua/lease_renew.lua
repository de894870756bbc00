-- lease_renew: extends a lease, and the concurrency slots held with it, only while it is still
-- held by this worker and attempt. A lost lease frees its slots at once.
-- KEYS: 1 lease key, 2.. semaphores "sluice:sem:<tag>" of the task's tags
-- ARGV: 1 holder "<worker>:<attempt>", 2 ttl ms, 3 slot holder "<R>|<task>|<idx>|<attempt>"
-- Returns 1 when renewed, 0 when the lease is lost.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  if #KEYS > 1 then
    local t = redis.call('TIME')
    local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
    for i = 2, #KEYS do redis.call('ZADD', KEYS[i], 'XX', expiry, ARGV[3]) end
  end
  return 1
end
for i = 2, #KEYS do redis.call('ZREM', KEYS[i], ARGV[3]) end
return 0
