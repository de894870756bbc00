-- lease_release: deletes a lease only if this worker and attempt still hold it, and frees the
-- concurrency slots of that attempt.
-- KEYS: 1 lease key, 2 lease set of the run, 3.. semaphores "sluice:sem:<tag>"
-- ARGV: 1 holder "<worker>:<attempt>", 2 slot holder "<R>|<task>|<idx>|<attempt>"
for i = 3, #KEYS do redis.call('ZREM', KEYS[i], ARGV[2]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SREM', KEYS[2], KEYS[1])
  return redis.call('DEL', KEYS[1])
end
return 0
