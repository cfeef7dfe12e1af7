-- Correct a product's units left to the database's figure, only if Redis
-- still holds the value the check saw (the database wins a mismatch).
-- KEYS[1] stock key
-- ARGV[1] = the value seen, ARGV[2] = the right value
-- Returns 1 when corrected, 0 when the value had changed meanwhile.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
