-- Let go of cells whose marker is the given one, and optionally of the hold hash.
-- Used to release a hold (marker 'H:<token>'), to abort a failed confirm (marker 'P:<id>') and
-- to free the cells of a cancelled or moved booking (marker 'B:<id>').
-- KEYS[1]   the hold hash (a key in the resource's slot even when no hold is involved, so the
--           script stays valid in Redis Cluster)
-- KEYS[2..] the cell keys
-- ARGV[1]   the marker to remove
-- ARGV[2]   '1' to refuse while a confirm of the hold is under way
-- ARGV[3]   '1' to delete the hold hash as well
-- Returns the number of cells freed, or -1 when refused.
if ARGV[2] == '1' and redis.call('HGET', KEYS[1], 'state') == 'confirming' then
  return -1
end
local n = 0
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    n = n + 1
  end
end
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[1])
end
return n
