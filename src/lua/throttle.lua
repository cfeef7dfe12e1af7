-- GCRA (generic cell rate algorithm), redis-cell's semantics: one value per
-- key, its theoretical arrival time (TAT) in microseconds of Redis' clock.
-- KEYS[1] the key's TAT
-- ARGV[1] emission interval T in microseconds (period / count; may have a
--         fraction), ARGV[2] delay variation tolerance T x (max_burst + 1),
--         rounded up, ARGV[3] the increment, T x quantity rounded up (any
--         value above ARGV[2] when the quantity can never be allowed)
-- Returns {allowed 1/0, remaining, retry_after us (-1: none), reset_after us,
-- the TAT the call left (what a refund needs)}.
-- The time is Redis' (TIME), never a client's: every caller of every
-- instance sees one clock.  Nothing is written when limited or for quantity 0.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T, dvt, inc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new = tat + inc
local allow_at = new - dvt
local allowed, retry, ttl = 1, -1, 0
local left = tat
if now < allow_at then
    allowed = 0
    if inc <= dvt then retry = allow_at - now end
    ttl = tat - now
else
    ttl = new - now
    left = new
    if inc > 0 then
        -- (a number argument goes to Redis in a form tonumber() reads back
        -- exactly; PXAT, an absolute expiry, is what Redis 7 would rewrite PX
        -- into for its replicas and AOF anyway)
        redis.call('SET', KEYS[1], new, 'PXAT', math.ceil(new / 1000))
    end
end
local remaining = 0
if dvt - ttl > 0 then remaining = math.floor((dvt - ttl) / T) end
return {allowed, remaining, retry, ttl, left}
