-- Start confirming a hold: check the token still owns every cell, then mark the cells pending
-- so that neither expiry nor another confirm can take them while PostgreSQL writes the row.
-- A hold already claimed is handed to this caller to finish: an earlier confirm's reply may
-- have been lost or its replica died, and PostgreSQL's unique hold_id lets only one row in.
-- KEYS[1]   the hold hash
-- KEYS[2..] the hold's cell keys
-- ARGV[1]   holder token
-- ARGV[2]   pending marker ('P:<booking_id>')
-- ARGV[3]   pending TTL in milliseconds
-- Returns {1, field, value, ...} claimed (the hold hash as it was);
--         {0} no such hold (expired, released, confirmed, or Redis lost it);
--         {3, field, value, ...} a confirm of this hold is already under way: the hash, whose
--             'pending' field is that confirm's marker (to finish it under the same booking id);
--             its pending cells and the hash live ARGV[3] ms again;
--         {-1, n} the n-th cell is no longer this holder's.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0}
end
if redis.call('HGET', KEYS[1], 'state') == 'confirming' then
  local pending = redis.call('HGET', KEYS[1], 'pending')
  for i = 2, #KEYS do
    if redis.call('GET', KEYS[i]) == pending then
      redis.call('PEXPIRE', KEYS[i], ARGV[3])
    end
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  local fields = redis.call('HGETALL', KEYS[1])
  table.insert(fields, 1, 3)
  return fields
end
local marker = 'H:' .. ARGV[1]
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) ~= marker then
    return {-1, i - 1}
  end
end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[2], 'PX', ARGV[3])
end
redis.call('HSET', KEYS[1], 'state', 'confirming', 'pending', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local fields = redis.call('HGETALL', KEYS[1])
table.insert(fields, 1, 1)
return fields
