-- Reserve units of one or more products for a transaction, all or nothing.
-- KEYS[1..n]        stock keys (units left)
-- KEYS[n+1..2n]     reservation hashes (transaction -> units reserved)
-- KEYS[2n+1..2n+s]  reservation hashes of committed transactions to settle
-- ARGV[1] = n, ARGV[2] = transaction, ARGV[3..2+n] = quantities,
-- ARGV[3+n] = s, ARGV[4+n..3+n+s] = the committed transactions to settle
-- Returns {1, left1, ..., leftn}; {0, i, left} when product i has too few;
-- {-1, i, j, ...} when Redis does not know products i, j, ... (the caller
-- reloads them all, then calls again).
-- Every check happens before the first write. Values stay below 2^53.
local n = tonumber(ARGV[1])
local txn = ARGV[2]
local s = tonumber(ARGV[3 + n])

local function settle()
    for i = 1, s do
        redis.call('HDEL', KEYS[2 * n + i], ARGV[3 + n + i])
    end
end

local missing = {-1}
for i = 1, n do
    local left = redis.call('GET', KEYS[i])
    if not left then
        missing[#missing + 1] = i
    elseif tonumber(left) < tonumber(ARGV[2 + i]) then
        settle()
        return {0, i, tonumber(left)}
    end
end
if #missing > 1 then
    settle()
    return missing
end

settle()
local out = {1}
for i = 1, n do
    out[i + 1] = redis.call('DECRBY', KEYS[i], ARGV[2 + i])
    redis.call('HINCRBY', KEYS[n + i], txn, ARGV[2 + i])
end
return out
