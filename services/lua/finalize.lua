-- Finish a confirm once PostgreSQL holds the booking row: pending cells become booked until the
-- booking ends, and the hold is gone. A move uses it too: its fresh cells carry the move's hold
-- marker, the cells it keeps already carry the booking's own.
-- KEYS[1]   the hold hash
-- KEYS[2..] the cell keys
-- ARGV[1]   the marker the cells carry now ('P:<booking_id>' after a claim, 'H:<token>' in a move)
-- ARGV[2]   booked marker ('B:<booking_id>')
-- ARGV[3]   unix time in milliseconds when the booking ends
-- ARGV[4]   optional: another marker of this booking's own ('H:<token>' of the hold it was
--           confirmed from, which a concurrent confirm of the same hold may have restored)
-- Returns the number of cells marked booked; a cell someone else holds is left alone.
local n = 0
for i = 2, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v == ARGV[1] or v == ARGV[2] or not v or (ARGV[4] and v == ARGV[4]) then
    redis.call('SET', KEYS[i], ARGV[2], 'PXAT', ARGV[3])
    n = n + 1
  end
end
redis.call('DEL', KEYS[1])
return n
