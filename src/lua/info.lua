-- Units left and the reservations of one product.
-- KEYS[1] stock key, KEYS[2] reservation hash
-- Returns {left or false, {transaction, units, ...}}
return {redis.call('GET', KEYS[1]), redis.call('HGETALL', KEYS[2])}
