-- Release a Redis lock: only its owner can. ARGV[2] acquisitions are given
-- up (it is reentrant); when none is left the lock is freed and the first
-- waiter is told (it is the only one that retries).
-- KEYS[1] lock hash, KEYS[2] queue   ARGV[1] owner, ARGV[2] count, ARGV[3] channel
-- Returns acquisitions still held (0: freed), -1 when not the owner.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
    return -1
end
local left = redis.call('HINCRBY', KEYS[1], 'count', -tonumber(ARGV[2]))
if left > 0 then
    return left
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[3], redis.call('ZRANGE', KEYS[2], 0, 0)[1] or 'free')
return 0
