-- Settle the reservation of a transaction that has ended: give back what it
-- did not keep (the ledger says what a commit kept; an abort keeps nothing)
-- and drop its entry.
-- KEYS[1] stock key, KEYS[2] reservation hash
-- ARGV[1] = transaction, ARGV[2] = units to give back
-- Returns the units given back.
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local give = math.min(tonumber(ARGV[2]), held)
redis.call('HDEL', KEYS[2], ARGV[1])
if give > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('INCRBY', KEYS[1], give)
    return give
end
return 0
