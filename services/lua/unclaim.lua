-- Undo a claim when PostgreSQL could not be reached: the hold is restored with the expiry it had,
-- so the caller can retry the confirm. If that expiry has passed, the hold is dropped.
-- KEYS[1]   the hold hash
-- KEYS[2..] the cell keys
-- ARGV[1]   holder token
-- ARGV[2]   pending marker ('P:<booking_id>')
-- ARGV[3]   now, unix milliseconds
-- Returns 1 restored, 0 dropped.
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires_ms') or '0')
local alive = expires > tonumber(ARGV[3])
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[2] then
    if alive then
      redis.call('SET', KEYS[i], 'H:' .. ARGV[1], 'PXAT', expires)
    else
      redis.call('DEL', KEYS[i])
    end
  end
end
if alive and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HDEL', KEYS[1], 'state', 'pending')
  redis.call('PEXPIREAT', KEYS[1], expires)
  return 1
end
redis.call('DEL', KEYS[1])
return 0
