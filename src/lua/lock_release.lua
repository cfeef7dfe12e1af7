-- Release Redis locks, several in one call (a backend's locks at the end of
-- its transaction or at exit), and hand each freed lock to its first live
-- waiter in the same call: the waiter is told its token on its own channel,
-- "<the lock's channel>:<waiter>" (only it wakes), and needs no round trip.
-- KEYS: four per lock: lock hash, fencing counter, queue, waiters
-- ARGV[1] owner, ARGV[2] mode, then two per lock: a count, the lock's channel
-- Modes (the reply has one integer per lock):
--   release  give up count acquisitions ('all': every one): acquisitions
--            left (0: freed), -1 when the owner does not hold it
--   trim     keep count acquisitions (an acquire cut short): as release
--   leave    a waiter gives up: out of the queue, and a lock handed to it
--            meanwhile is passed on; 0
--   force    free the lock whoever holds it: 1 when it was held, else 0
local owner, mode = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function next_token(fence)
    local token = redis.call('INCR', fence)
    if token == 1 then
        redis.call('SET', fence, t[1] .. string.format('%06d', tonumber(t[2])))
        token = tonumber(redis.call('GET', fence))
    end
    redis.call('PEXPIRE', fence, 86400000)
    return token
end

-- the lock is free: grant it to the first waiter still alive
local function hand_off(lock, fence, queue, waiters, channel)
    while true do
        local head = redis.call('ZRANGE', queue, 0, 0)[1]
        if not head then return end
        redis.call('ZREM', queue, head)
        local w = redis.call('HGET', waiters, head)
        redis.call('HDEL', waiters, head)
        if w then
            local deadline, pickup = string.match(w, '^(%d+) %d+ (%d+)$')
            if tonumber(deadline) >= now then
                local token = next_token(fence)
                redis.call('HSET', lock, 'owner', head, 'count', 1, 'token', string.format('%d', token))
                redis.call('PEXPIRE', lock, pickup)
                redis.call('PUBLISH', channel .. ':' .. head, head .. ' ' .. string.format('%d', token))
                return
            end
        end
    end
end

local result = {}
for i = 1, #KEYS / 4 do
    local lock, fence, queue, waiters = KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
    local count, channel = ARGV[2 * i + 1], ARGV[2 * i + 2]
    local holder = redis.call('HGET', lock, 'owner')
    local r = 0
    if mode == 'leave' then
        redis.call('ZREM', queue, owner)
        redis.call('HDEL', waiters, owner)
        if holder == owner then
            redis.call('DEL', lock)
        end
    elseif mode == 'force' then
        if holder then
            redis.call('DEL', lock)
            r = 1
        end
    elseif holder ~= owner then
        r = -1
    else
        local held = tonumber(redis.call('HGET', lock, 'count'))
        if mode == 'trim' then
            r = math.min(held, tonumber(count))
        elseif count ~= 'all' then
            r = math.max(held - tonumber(count), 0)
        end
        if r > 0 then
            redis.call('HSET', lock, 'count', r)
        else
            redis.call('DEL', lock)
        end
    end
    if redis.call('EXISTS', lock) == 0 then
        hand_off(lock, fence, queue, waiters, channel)
    end
    result[i] = r
end
return result
