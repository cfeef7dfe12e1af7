-- Give back what an admission took (its transaction or savepoint rolled back):
-- the key's TAT moves back by the increment, no earlier than now (a TAT in the
-- past means a full burst, as no key does).
-- KEYS[1] the key's TAT, ARGV[1] the increment in microseconds
-- Returns 1 when the key was there, 0 when it had expired.
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local new = tat - tonumber(ARGV[1])
if new <= now then
    redis.call('DEL', KEYS[1])
else
    redis.call('SET', KEYS[1], new, 'PXAT', math.ceil(new / 1000))
end
return 1
