-- A waiter gives up: it leaves the queue; if the lock is free, the new first
-- waiter is told.
-- KEYS[1] queue, KEYS[2] waiters' deadlines, KEYS[3] lock hash
-- ARGV[1] owner, ARGV[2] channel
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
    redis.call('HDEL', KEYS[2], ARGV[1])
    if redis.call('EXISTS', KEYS[3]) == 0 then
        redis.call('PUBLISH', ARGV[2], redis.call('ZRANGE', KEYS[1], 0, 0)[1] or 'free')
    end
end
return 0
