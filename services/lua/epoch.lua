-- Redis's epoch: a key that exists while Redis still holds every booked cell PostgreSQL knows of.
-- A rebuild takes the lock (SET NX PX), marks the cells, then commits the epoch through this
-- script, which refuses when the lock is no longer the rebuilder's: Redis lost the lock (and so
-- maybe the cells just written) or another rebuilder took over after it lapsed.
-- KEYS[1]  the rebuild lock
-- KEYS[2]  the epoch
-- ARGV[1]  the rebuilder's token
-- ARGV[2]  'renew' (keep the lock ARGV[3] ms more), 'commit' (set the epoch, drop the lock) or
--          'drop' (let the lock go: the rebuild failed)
-- ARGV[3]  the lock's TTL in milliseconds
-- ARGV[4]  the epoch's value (commit)
-- Returns 1 done, 0 the lock is not this rebuilder's.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == 'renew' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if ARGV[2] == 'commit' then
  redis.call('SET', KEYS[2], ARGV[4])
end
redis.call('DEL', KEYS[1])
return 1
