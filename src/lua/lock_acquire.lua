-- Acquire a Redis lock for an owner, FIFO among waiters, reentrant.
-- KEYS[1] lock hash {owner, count, token}   KEYS[2] fencing counter
-- KEYS[3] queue (zset: waiter -> ticket)
-- KEYS[4] waiters (hash: waiter -> "deadline lease pickup")
-- ARGV[1] owner, ARGV[2] lease ms, ARGV[3] '1' to queue up when not acquired,
-- ARGV[4] ms a waiter's place is kept without a renewal,
-- ARGV[5] acquisitions the owner knows it holds,
-- ARGV[6] the lease a release that hands the lock to this waiter gives it
-- (shorter than ARGV[2] when the worker extends it: a waiter that died
-- just before the hand-off holds the lock only that long)
-- Returns {1, fencing token} when held, {0, ms until the lease ends or -1}.
-- The helper keys expire when unused: queue and waiters 2 x ARGV[4] after the
-- last waiter's renewal, the fencing counter a day after the last acquisition
-- (a new counter starts at Redis' clock in microseconds, above every earlier
-- token as long as the lock was taken less than a million times a second).
local owner, lease = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function next_token()
    local token = redis.call('INCR', KEYS[2])
    if token == 1 then
        redis.call('SET', KEYS[2], t[1] .. string.format('%06d', tonumber(t[2])))
        token = tonumber(redis.call('GET', KEYS[2]))
    end
    redis.call('PEXPIRE', KEYS[2], 86400000)
    return token
end

-- waiters that gave up without saying so (died) leave the head of the queue
while true do
    local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
    if not head then break end
    local w = redis.call('HGET', KEYS[4], head)
    if w and tonumber(string.match(w, '^%d+')) >= now then break end
    redis.call('ZREM', KEYS[3], head)
    redis.call('HDEL', KEYS[4], head)
end

local holder = redis.call('HGET', KEYS[1], 'owner')
if holder == owner then
    if ARGV[5] == '0' then
        -- handed over by a release this owner has not heard of yet: held once
        redis.call('HSET', KEYS[1], 'count', 1)
    else
        redis.call('HINCRBY', KEYS[1], 'count', 1)
    end
    redis.call('PEXPIRE', KEYS[1], lease)
    redis.call('ZREM', KEYS[3], owner)
    redis.call('HDEL', KEYS[4], owner)
    return {1, tonumber(redis.call('HGET', KEYS[1], 'token'))}
end
if not holder then
    local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
    if not head or head == owner then
        redis.call('ZREM', KEYS[3], owner)
        redis.call('HDEL', KEYS[4], owner)
        local token = next_token()
        redis.call('HSET', KEYS[1], 'owner', owner, 'count', 1, 'token', string.format('%d', token))
        redis.call('PEXPIRE', KEYS[1], lease)
        return {1, token}
    end
end
if ARGV[3] == '1' then
    if not redis.call('ZSCORE', KEYS[3], owner) then
        local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')[2]
        redis.call('ZADD', KEYS[3], (tonumber(last) or 0) + 1, owner)
    end
    redis.call('HSET', KEYS[4], owner, (now + tonumber(ARGV[4])) .. ' ' .. lease .. ' ' .. ARGV[6])
    redis.call('PEXPIRE', KEYS[3], 2 * tonumber(ARGV[4]))
    redis.call('PEXPIRE', KEYS[4], 2 * tonumber(ARGV[4]))
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then ttl = -1 end
return {0, ttl}
