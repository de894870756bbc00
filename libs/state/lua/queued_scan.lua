-- queued_scan: dispatches that wait for a worker of a queue, for a worker whose slots idle to
-- take with their leases (ADR 23); entries that wait no more leave the index.
-- KEYS: 1 the queue's index "sluice:queued:<queue>" (instance key -> dispatched at, ms)
-- ARGV: 1 how many of the oldest entries to look at, 2 most dispatches to return
-- Returns the stored TaskDispatch bytes of up to ARGV[2] instances still DISPATCHED.
local out = {}
local want = tonumber(ARGV[2])
if want < 1 then return out end
for _, ti in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)) do
  local d = redis.call('HGET', ti, 'state') == 'DISPATCHED' and dispatch_get(ti)
  if d then
    out[#out + 1] = d
    if #out >= want then break end
  else
    redis.call('ZREM', KEYS[1], ti)
  end
end
return out
