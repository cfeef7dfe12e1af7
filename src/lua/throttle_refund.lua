-- Give back what an admission took (its transaction or savepoint rolled back).
-- The admission occupied [tat - increment, tat) of the key's schedule, where
-- tat is the TAT it left; the part of it already past has been paid for by
-- time and is not given back (it would free capacity later admissions used):
-- only min(increment, tat - now) moves the key's TAT back.  A TAT in the past
-- means a full burst, as no key does.
-- KEYS[1] the key's TAT, ARGV[1] the increment, ARGV[2] the TAT the admission
-- left, in microseconds
-- Returns the microseconds given back (0 when the key had expired).
-- The key expires at the end of the second its TAT falls in, as
-- src/lua/throttle.lua writes it (which relies on that to keep an expiry).
local cur = tonumber(redis.call('GET', KEYS[1]))
if not cur then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local back = math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - now)
if back <= 0 then return 0 end
local new = cur - back
if new <= now then
    redis.call('DEL', KEYS[1])
else
    redis.call('SET', KEYS[1], new, 'PXAT', math.ceil(new / 1000000) * 1000)
end
return back
