-- ti_dispatch: the stored TaskDispatch bytes of an instance, if it is still in the given state
-- at the given attempt (read and check in one step, for re-sends outside the reaper).
-- KEYS: 1 instance hash   ARGV: 1 state, 2 attempt
-- Returns the bytes, or nil when the instance moved on or has none stored.
local ti = redis.call('HMGET', KEYS[1], 'state', 'attempt')
if ti[1] ~= ARGV[1] or tonumber(ti[2]) ~= tonumber(ARGV[2]) then return false end
return dispatch_get(KEYS[1]) or false
