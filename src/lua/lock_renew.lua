-- Renew the lease of a lock while its owner lives (the watchdog).
-- KEYS[1] lock hash   ARGV[1] owner, ARGV[2] lease ms
-- Returns 1 when renewed, 0 when the owner no longer holds it.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
    return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
