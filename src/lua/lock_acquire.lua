-- Acquire a Redis lock for an owner, FIFO among waiters, reentrant.
-- KEYS[1] lock hash {owner, count, token}   KEYS[2] fencing counter
-- KEYS[3] queue (zset: waiter -> ticket)    KEYS[4] waiters' deadlines (hash)
-- KEYS[5] ticket counter
-- ARGV[1] owner, ARGV[2] lease ms, ARGV[3] '1' to queue up when not acquired,
-- ARGV[4] ms this waiter's place is kept without a renewal
-- Returns {1, fencing token} when held, {0, ms until the lease ends or -1}.
local owner, lease = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- waiters that gave up without saying so (died) leave the head of the queue
while true do
    local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
    if not head then break end
    if tonumber(redis.call('HGET', KEYS[4], head) or '0') >= now then break end
    redis.call('ZREM', KEYS[3], head)
    redis.call('HDEL', KEYS[4], head)
end

local holder = redis.call('HGET', KEYS[1], 'owner')
if holder == owner then
    redis.call('HINCRBY', KEYS[1], 'count', 1)
    redis.call('PEXPIRE', KEYS[1], lease)
    return {1, tonumber(redis.call('HGET', KEYS[1], 'token'))}
end
if not holder then
    local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
    if not head or head == owner then
        redis.call('ZREM', KEYS[3], owner)
        redis.call('HDEL', KEYS[4], owner)
        local token = redis.call('INCR', KEYS[2])
        redis.call('HSET', KEYS[1], 'owner', owner, 'count', 1, 'token', token)
        redis.call('PEXPIRE', KEYS[1], lease)
        return {1, token}
    end
end
if ARGV[3] == '1' then
    if not redis.call('ZSCORE', KEYS[3], owner) then
        redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[5]), owner)
    end
    redis.call('HSET', KEYS[4], owner, now + tonumber(ARGV[4]))
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then ttl = -1 end
return {0, ttl}
