-- Take one of a call's hold slots, or refuse when the call already has its maximum live.
-- Separate from reserve.lua on purpose: the call's key is in its own slot (Redis Cluster), and
-- the reservation script stays the one owner of cells.
-- KEYS[1]  the call's slots: a sorted set of slot ids scored by the hold's expiry (ms)
-- ARGV[1]  now (ms)
-- ARGV[2]  the maximum of live holds
-- ARGV[3]  the new slot id
-- ARGV[4]  the new hold's expiry (ms)
-- Returns {1, live} when taken (live counts the new one), else {0, live, ms until the
-- earliest live hold expires}.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local live = redis.call('ZCARD', KEYS[1])
if live >= tonumber(ARGV[2]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, live, tonumber(first[2]) - tonumber(ARGV[1])}
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
-- Every hold of a call has the same TTL, so the newest expires last.
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return {1, live + 1}
