-- Give an idle allotment's units back to the pool.
-- KEYS[1] pool, KEYS[2] the allotment hash (see lease.lua)
-- ARGV: instance, epoch, sequence, units, units the instance holds after,
-- the new sequence
-- Returns 1, or -1 (nothing moved) when the record is not what the
-- instance expects.
local inst = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0
    or redis.call('HGET', KEYS[2], 'e:' .. inst) ~= ARGV[2]
    or redis.call('HGET', KEYS[2], 's:' .. inst) ~= ARGV[3] then
    return -1
end
redis.call('INCRBY', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], 's:' .. inst, ARGV[6], 'h:' .. inst, ARGV[5])
return 1
