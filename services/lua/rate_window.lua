-- Fixed-window write counters, checked together and counted only when all admit.
-- KEYS[1..]  window counters (one hash tag, so the script is valid in Redis Cluster)
-- ARGV[1]    the window, in milliseconds
-- ARGV[2..]  the limit of each key, in KEYS order
-- Returns {0, 0} when admitted (every counter incremented), else {i, ms} for the first key at
-- its limit: i its position, ms until its window ends.
for i = 1, #KEYS do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used >= tonumber(ARGV[i + 1]) then
    local ms = redis.call('PTTL', KEYS[i])
    if ms < 0 then
      -- A counter without an expiry (should not happen): give it one so it cannot stick.
      redis.call('PEXPIRE', KEYS[i], ARGV[1])
      ms = tonumber(ARGV[1])
    end
    return {i, ms}
  end
end
for i = 1, #KEYS do
  if redis.call('INCR', KEYS[i]) == 1 then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
  end
end
return {0, 0}
