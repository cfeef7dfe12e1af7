-- A waiter gives up: it leaves the queue, and those behind it are woken.
-- KEYS[1] queue, KEYS[2] waiters' deadlines   ARGV[1] owner, ARGV[2] channel
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
    redis.call('HDEL', KEYS[2], ARGV[1])
    redis.call('PUBLISH', ARGV[2], 'left')
end
return 0
