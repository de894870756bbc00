-- lease_renew: extends a lease only while it is still held by this worker and attempt.
-- KEYS: 1 lease key   ARGV: 1 holder "<worker>:<attempt>", 2 ttl ms
-- Returns 1 when renewed, 0 when the lease is lost.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
