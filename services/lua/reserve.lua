-- Reserve every grid cell of a request, or none.
-- KEYS[1]   the hold hash            <prefix>:{r:<resource>}:h:<token>
-- KEYS[2]   the idempotency key      <prefix>:{r:<resource>}:i:<key>  (ignored if ARGV[3] == '')
-- KEYS[3..] the cell keys            <prefix>:{r:<resource>}:c:<cell>
-- ARGV[1]   holder token
-- ARGV[2]   TTL in milliseconds
-- ARGV[3]   the request's fingerprint when an idempotency key is given, else ''
-- ARGV[4..] field, value pairs stored in the hold hash
-- Returns {1, token} reserved; {2, token} replay of an earlier hold with this idempotency key;
--         {4} the idempotency key was used for a different request on this resource (or its
--             record carries no fingerprint);
--         {0, n, value} the n-th cell (1-based) is taken, value is its current marker.
-- All keys share the resource's hash tag, so the script is valid in Redis Cluster.
if ARGV[3] ~= '' then
  local prior = redis.call('GET', KEYS[2])
  if prior then
    local token, fingerprint = string.match(prior, '^(%S+) (%S+)$')
    -- A record without a fingerprint (written before keys carried one) matches no request.
    if fingerprint ~= ARGV[3] then
      return {4}
    end
    return {2, token}
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
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. ARGV[3], 'PX', ARGV[2])
end
return {1, ARGV[1]}
