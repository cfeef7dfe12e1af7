-- What Redis knows of one lock, for redis_lock_info().
-- KEYS[1] lock hash, KEYS[2] queue, KEYS[3] waiters
-- Returns {owner or '', count, token, ms of lease left or -1, {live waiters in queue order}}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 'owner', 'count', 'token')
local waiting = {}
for _, w in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    local v = redis.call('HGET', KEYS[3], w)
    if v and tonumber(string.match(v, '^%d+')) >= now then
        waiting[#waiting + 1] = w
    end
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then ttl = -1 end
return {h[1] or '', tonumber(h[2] or '0'), tonumber(h[3] or '0'), ttl, waiting}
