-- Reserve every grid cell of a request, or none.
-- KEYS[1]   the hold hash            {p}:{r:<resource>}:h:<token>
-- KEYS[2]   the idempotency key      {p}:{r:<resource>}:i:<key>  (ignored unless ARGV[3] == '1')
-- KEYS[3..] the cell keys            {p}:{r:<resource>}:c:<cell>
-- ARGV[1]   holder token
-- ARGV[2]   TTL in milliseconds
-- ARGV[3]   '1' when an idempotency key is given
-- ARGV[4..] field, value pairs stored in the hold hash
-- Returns {1, token} reserved; {2, token} replay of an earlier hold with this idempotency key;
--         {0, n, value} the n-th cell (1-based) is taken, value is its current marker.
-- All keys share the resource's hash tag, so the script is valid in Redis Cluster.
if ARGV[3] == '1' then
  local prior = redis.call('GET', KEYS[2])
  if prior then
    return {2, prior}
  end
end
for i = 3, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v then
    return {0, i - 2, v}
  end
end
local marker = 'H:' .. ARGV[1]
for i = 3, #KEYS do
  redis.call('SET', KEYS[i], marker, 'PX', ARGV[2])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[3] == '1' then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
end
return {1, ARGV[1]}
