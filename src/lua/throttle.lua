-- GCRA (generic cell rate algorithm), redis-cell's semantics: one value per
-- key, its theoretical arrival time (TAT) in microseconds of Redis' clock.
-- KEYS[1] the key's TAT
-- ARGV[1] delay variation tolerance T x (max_burst + 1), rounded up,
-- ARGV[2] the increment, T x quantity rounded up (any value above ARGV[1]
--         when the quantity can never be allowed),
-- ARGV[3] (optional) "now": the caller also wants Redis' time
-- Returns d, how far the key's TAT was ahead of now before the call (0 if
-- not), when allowed, and -1 - d when limited: one integer, the cheapest
-- reply there is; {that, now} when ARGV[3] is given (a refund needs the
-- TAT the admission left in Redis' time).  The caller (throttle.c) derives
-- remaining, retry_after and reset_after from d with throttle_local()'s
-- arithmetic, and checks it agrees on allowed.
-- The time is Redis' (TIME), never a client's: every caller of every
-- instance sees one clock.  Nothing is written when limited or for quantity 0.
--
-- Expiry.  A key is needed until its TAT; it expires at the end of the
-- second its TAT falls in (src/lua/throttle_refund.lua writes it the same
-- way), so a write whose TAT stays in the second of the stored one keeps the
-- expiry (KEEPTTL) instead of rewriting it: a hot key's expiry is rewritten
-- once a second, not at every call.  A key that outlives its TAT by less than
-- a second reads as a full burst, as no key does.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local dvt, inc = tonumber(ARGV[1]), tonumber(ARGV[2])
local stored = tonumber(redis.call('GET', KEYS[1]))
local tat = stored or now
if tat < now then tat = now end
local new = tat + inc
local d = tat - now
if now < new - dvt then
    if ARGV[3] then return {-1 - d, now} end
    return -1 - d
end
if inc > 0 then
    -- (a number argument goes to Redis in a form tonumber() reads back
    -- exactly; PXAT is absolute, what Redis would rewrite PX into for its
    -- replicas and AOF anyway)
    local second = math.ceil(new / 1000000)
    if stored and math.ceil(stored / 1000000) == second then
        redis.call('SET', KEYS[1], new, 'KEEPTTL')
    else
        redis.call('SET', KEYS[1], new, 'PXAT', second * 1000)
    end
end
if ARGV[3] then return {d, now} end
return d
