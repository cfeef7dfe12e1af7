-- Rebuild a product's pool from the database truth minus what the instance
-- holds (the caller computed it with no other transaction in flight), and
-- start the instance's record afresh: epoch, a new sequence, units held.
-- KEYS[1] pool, KEYS[2] the allotment hash, KEYS[3] the reservation hash
-- of flashsale 1.5 (dropped)
-- ARGV: instance, epoch, pool, units held, the new sequence
-- Returns 1.
local inst = ARGV[1]
redis.call('DEL', KEYS[3])
redis.call('SET', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], 'e:' .. inst, ARGV[2], 's:' .. inst, ARGV[5], 'h:' .. inst, ARGV[4])
return 1
