-- Load a product Redis does not know from the database truth. The caller
-- holds the product's lock exclusively, so no other transaction has units
-- of it in flight; only the caller's own reservation (if any) is kept.
-- KEYS[1] stock key, KEYS[2] reservation hash
-- ARGV[1] = units left, ARGV[2] = caller's transaction, ARGV[3] = its units
-- Returns 1 when loaded, 0 when the key was there already.
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1])
if tonumber(ARGV[3]) > 0 then
    redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
end
return 1
