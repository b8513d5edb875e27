-- Propose a daily rate for an inventory hold: count the attempt, compare it with the hold's
-- bounds, and lock an accepted rate to the hold, all in one step so that concurrent proposals
-- can neither exceed the attempt limit nor both be accepted.
-- KEYS[1]  the hold hash (services.reservations.HoldHash, with services.inventory's UnitTerms
--          fields floor_cents, max_cents, attempts, agreed_cents)
-- ARGV[1]  the proposed rate in cents
-- ARGV[2]  the most attempts allowed per hold
-- Returns {code, attempts, floor_cents, max_cents, agreed_cents or '', start_ms, end_ms, kind},
-- where code is (services.kv.NegotiateReply)
--   1 accepted and now locked        4 a rate is already locked (this or another)
--   0 no such hold (or not one with rates: expired, released, confirmed)
--   3 a confirm of the hold is under way (nothing changes)
--   5 no attempts left               6 below the floor            7 above the maximum
-- Only codes 1, 6 and 7 count an attempt.
local h = redis.call('HMGET', KEYS[1], 'state', 'floor_cents', 'max_cents', 'agreed_cents',
                     'attempts', 'start_ms', 'end_ms', 'kind')
if not h[2] or not h[3] or not h[6] or not h[7] or not h[8] then
  return {0, 0, 0, 0, '', 0, 0, ''}
end
local floor, ceiling = tonumber(h[2]), tonumber(h[3])
local attempts = tonumber(h[5] or '0')
local agreed = h[4] or ''
if h[1] == 'confirming' then
  return {3, attempts, floor, ceiling, agreed, h[6], h[7], h[8]}
end
if agreed ~= '' then
  return {4, attempts, floor, ceiling, agreed, h[6], h[7], h[8]}
end
if attempts >= tonumber(ARGV[2]) then
  return {5, attempts, floor, ceiling, '', h[6], h[7], h[8]}
end
attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local rate = tonumber(ARGV[1])
if rate < floor then
  return {6, attempts, floor, ceiling, '', h[6], h[7], h[8]}
end
if rate > ceiling then
  return {7, attempts, floor, ceiling, '', h[6], h[7], h[8]}
end
redis.call('HSET', KEYS[1], 'agreed_cents', ARGV[1])
return {1, attempts, floor, ceiling, ARGV[1], h[6], h[7], h[8]}
