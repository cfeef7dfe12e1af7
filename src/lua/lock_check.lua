-- Does the owner still hold these locks?  (A transaction's, before it commits.)
-- KEYS: lock hashes   ARGV[1] owner
-- Returns one integer per lock: 1 held, 0 lost (its lease ran out; it may be
-- someone else's now).
local result = {}
for i, lock in ipairs(KEYS) do
    result[i] = (redis.call('HGET', lock, 'owner') == ARGV[1]) and 1 or 0
end
return result
