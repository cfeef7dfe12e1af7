-- Lease units of a product from the pool into an instance's allotment.
-- KEYS[1] pool (units unsold and unallotted), KEYS[2] the allotment hash:
--   e:<instance> epoch, s:<instance> sequence, h:<instance> units held
-- ARGV: instance, epoch, sequence, need, want, units held before the lease,
-- the new sequence (never used before in this epoch)
-- Returns {-1} when the pool or the instance's record is not what the
-- instance expects (it rebuilds the pool from the database); {0, pool} when
-- the pool has fewer than need (nothing moves); {granted, pool left}.
-- Never more than a quarter of the pool beyond need: near sell-out, units
-- stay in the pool for other instances.
local inst = ARGV[1]
local pool = redis.call('GET', KEYS[1])
if not pool
    or redis.call('HGET', KEYS[2], 'e:' .. inst) ~= ARGV[2]
    or redis.call('HGET', KEYS[2], 's:' .. inst) ~= ARGV[3] then
    return {-1}
end
pool = tonumber(pool)
local need = tonumber(ARGV[4])
if pool < need then
    return {0, pool}
end
local g = math.min(tonumber(ARGV[5]), pool, math.max(need, math.ceil(pool / 4)))
redis.call('DECRBY', KEYS[1], g)
redis.call('HSET', KEYS[2], 's:' .. inst, ARGV[7], 'h:' .. inst, tonumber(ARGV[6]) + g)
return {g, pool - g}
