-- Release a once() key its transaction rolled back, if it is still that
-- call's (its ttl may have run out and another call taken it since).
-- KEYS[1] the key, ARGV[1] the token the call set
-- Returns 1 when released, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
