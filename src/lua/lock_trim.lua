-- After an interrupted acquire whose outcome is unknown: if the owner holds
-- more acquisitions than it knows of, keep only those (none: free the lock).
-- KEYS[1] lock hash, KEYS[2] queue   ARGV[1] owner, ARGV[2] acquisitions to keep,
-- ARGV[3] channel
-- Returns 1 when trimmed, 0 otherwise.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
    return 0
end
local keep = tonumber(ARGV[2])
if tonumber(redis.call('HGET', KEYS[1], 'count')) <= keep then
    return 0
end
if keep == 0 then
    redis.call('DEL', KEYS[1])
    redis.call('PUBLISH', ARGV[3], redis.call('ZRANGE', KEYS[2], 0, 0)[1] or 'free')
else
    redis.call('HSET', KEYS[1], 'count', keep)
end
return 1
