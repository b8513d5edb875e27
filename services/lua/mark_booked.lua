-- Mark the cells of one confirmed booking as booked again, after Redis lost its data.
-- KEYS[1..]  the booking's cell keys (one resource, one hash tag)
-- ARGV[1]    the booked marker ('B:<booking_id>')
-- ARGV[2]    when the booking ends, unix milliseconds (the cells' PXAT)
-- A cell that carries a booked marker keeps it. A hold's ('H:') or a confirm's ('P:') marker is
-- overwritten: PostgreSQL has the time booked, so that hold's confirm could only be refused,
-- and a hold left in place would free the time when it lapsed or was released.
-- Returns the number of cells written.
local written = 0
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if not v or string.sub(v, 1, 2) ~= 'B:' then
    redis.call('SET', KEYS[i], ARGV[1], 'PXAT', ARGV[2])
    written = written + 1
  end
end
return written
