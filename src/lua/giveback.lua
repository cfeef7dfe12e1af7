-- Give back units a transaction reserved (rollback, savepoint rollback,
-- settlement of an aborted transaction). Never gives back more than the
-- reservation still holds, so a repeated or uncertain give-back is exact.
-- KEYS[1..n] stock keys, KEYS[n+1..2n] reservation hashes
-- ARGV[1] = n, ARGV[2] = transaction, ARGV[3..2+n] = quantities
-- Returns the units given back in all.
local n = tonumber(ARGV[1])
local txn = ARGV[2]
local total = 0
for i = 1, n do
    local held = tonumber(redis.call('HGET', KEYS[n + i], txn) or '0')
    local q = math.min(tonumber(ARGV[2 + i]), held)
    if q > 0 then
        -- a lost stock key is reloaded from the database, which already
        -- leaves these units out: never re-create it here
        if redis.call('EXISTS', KEYS[i]) == 1 then
            redis.call('INCRBY', KEYS[i], q)
        end
        total = total + q
    end
    if held - q <= 0 then
        redis.call('HDEL', KEYS[n + i], txn)
    else
        redis.call('HINCRBY', KEYS[n + i], txn, -q)
    end
end
return total
