-- lease_release: deletes a lease only if this worker and attempt still hold it.
-- KEYS: 1 lease key   ARGV: 1 holder "<worker>:<attempt>"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
