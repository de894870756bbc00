-- worker_drain: asks a registered worker to drain; a worker that is gone stays gone.
-- KEYS: 1 worker hash   Returns 1 when the request was recorded, 0 when no such worker.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'draining', 1)
return 1
