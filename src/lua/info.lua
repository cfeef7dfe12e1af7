-- What Redis holds of one product: the pool and the allotment hash.
-- KEYS[1] pool, KEYS[2] the allotment hash
-- Returns {pool or false, {field, value, ...}}
return {redis.call('GET', KEYS[1]), redis.call('HGETALL', KEYS[2])}
