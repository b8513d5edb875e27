"""Every SQL statement the scheduling service runs, by name, written out whole so it can be
grepped. The comment above each names the index it uses (migrations 0001, 0002 and 0006)."""

from __future__ import annotations

# service_types is a handful of rows; resources by scheduling_resources_pool_idx.
SELECT_SERVICE_TYPES = """
SELECT st.service_type_id, st.name, st.description, st.duration_minutes,
       st.price_min_usd, st.price_max_usd, st.resource_pool,
       coalesce(array_agg(r.resource_id ORDER BY r.resource_id)
                    FILTER (WHERE r.resource_id IS NOT NULL), '{}') AS resource_ids
  FROM service_types st
  LEFT JOIN scheduling_resources r ON r.pool = st.resource_pool AND r.active
 WHERE st.active
 GROUP BY st.service_type_id
 ORDER BY st.resource_pool, st.duration_minutes, st.service_type_id"""

# service_types_pkey, scheduling_resources_pool_idx.
SELECT_SERVICE_TYPE = """
SELECT st.service_type_id, st.name, st.description, st.duration_minutes,
       st.price_min_usd, st.price_max_usd, st.resource_pool,
       coalesce(array_agg(r.resource_id ORDER BY r.resource_id)
                    FILTER (WHERE r.resource_id IS NOT NULL), '{}') AS resource_ids
  FROM service_types st
  LEFT JOIN scheduling_resources r ON r.pool = st.resource_pool AND r.active
 WHERE st.active AND st.service_type_id = $1
 GROUP BY st.service_type_id"""

# The gist index behind bookings_no_overlap (resource_id, during) WHERE status <> 'cancelled'.
SELECT_BUSY = """
SELECT resource_id, lower(during) AS starts, upper(during) AS ends
  FROM bookings
 WHERE resource_id = ANY($1::text[]) AND status <> 'cancelled' AND during && $2::tstzrange"""

# customers_phone_key. The upsert also locks the row, so one customer's bookings learn their
# preferences one after another.
UPSERT_CUSTOMER = """
INSERT INTO customers (customer_id, phone, name, email) VALUES ($1, $2, $3, $4)
ON CONFLICT (phone) DO UPDATE
   SET name = coalesce(EXCLUDED.name, customers.name),
       email = coalesce(EXCLUDED.email, customers.email),
       updated_at = now()
RETURNING customer_id"""

# customers_pkey.
LOCK_CUSTOMER = "SELECT 1 FROM customers WHERE customer_id = $1 FOR UPDATE"

# customers_phone_key.
SELECT_CUSTOMER = """
SELECT customer_id, phone, name, email, preferred_time_of_day, preferred_weekdays
  FROM customers
 WHERE phone = $1"""

# vehicles_customer_idx.
SELECT_VEHICLES = """
SELECT vehicle_id, year, make, model, plate
  FROM vehicles
 WHERE customer_id = $1
 ORDER BY created_at, vehicle_id"""

# vehicles_customer_idx; the same car said twice is one vehicle.
SELECT_SAME_VEHICLE = """
SELECT vehicle_id
  FROM vehicles
 WHERE customer_id = $1 AND lower(make) = lower($2) AND lower(model) = lower($3)
   AND year IS NOT DISTINCT FROM $4 AND upper(plate) IS NOT DISTINCT FROM upper($5)
 LIMIT 1"""

INSERT_VEHICLE = """
INSERT INTO vehicles (vehicle_id, customer_id, year, make, model, plate)
VALUES ($1, $2, $3, $4, $5, $6)"""

INSERT_APPOINTMENT = """
INSERT INTO appointments
    (appointment_id, booking_id, customer_id, service_type_id, vehicle_id, notes, call_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)"""

# appointments_pkey.
TOUCH_APPOINTMENT = """
UPDATE appointments SET updated_at = now() WHERE appointment_id = $1
RETURNING customer_id"""

# appointments_pkey, then primary keys.
SELECT_APPOINTMENT = """
SELECT a.appointment_id, a.booking_id, a.customer_id, a.service_type_id, a.vehicle_id,
       a.notes, a.call_id,
       b.reference, b.status, b.resource_id, lower(b.during) AS starts,
       upper(b.during) AS ends, b.cancel_reason,
       st.name AS service_name, st.price_min_usd, st.price_max_usd,
       c.phone, c.name AS customer_name
  FROM appointments a
  JOIN bookings b ON b.booking_id = a.booking_id
  JOIN service_types st ON st.service_type_id = a.service_type_id
  JOIN customers c ON c.customer_id = a.customer_id
 WHERE a.appointment_id = $1"""

# customers_phone_key, appointments_customer_idx, bookings_pkey.
SELECT_UPCOMING_FOR_PHONE = """
SELECT a.appointment_id, a.booking_id, a.customer_id, a.service_type_id, a.vehicle_id,
       a.notes, a.call_id,
       b.reference, b.status, b.resource_id, lower(b.during) AS starts,
       upper(b.during) AS ends, b.cancel_reason,
       st.name AS service_name, st.price_min_usd, st.price_max_usd,
       c.phone, c.name AS customer_name
  FROM appointments a
  JOIN bookings b ON b.booking_id = a.booking_id
  JOIN service_types st ON st.service_type_id = a.service_type_id
  JOIN customers c ON c.customer_id = a.customer_id
 WHERE c.phone = $1 AND b.status = 'confirmed' AND lower(b.during) > $2
 ORDER BY lower(b.during), a.appointment_id"""

# appointments_customer_idx, bookings_pkey.
SELECT_CUSTOMER_STARTS = """
SELECT lower(b.during) AS starts
  FROM appointments a
  JOIN bookings b ON b.booking_id = a.booking_id
 WHERE a.customer_id = $1 AND b.status = 'confirmed'"""

UPDATE_PREFERENCES = """
UPDATE customers
   SET preferred_time_of_day = $2, preferred_weekdays = $3, updated_at = now()
 WHERE customer_id = $1"""

INSERT_CALLBACK = """
INSERT INTO callbacks (callback_id, customer_id, reason, scheduled_for, call_id)
VALUES ($1, $2, $3, $4, $5)"""

# callbacks_pkey.
SELECT_CALLBACK = """
SELECT cb.callback_id, cb.reason, cb.scheduled_for, cb.status, cb.call_id,
       c.phone, c.name AS customer_name
  FROM callbacks cb
  JOIN customers c ON c.customer_id = cb.customer_id
 WHERE cb.callback_id = $1"""

# callbacks_scheduled_for_idx.
SELECT_CALLBACKS_BETWEEN = """
SELECT cb.callback_id, cb.reason, cb.scheduled_for, cb.status, cb.call_id,
       c.phone, c.name AS customer_name
  FROM callbacks cb
  JOIN customers c ON c.customer_id = cb.customer_id
 WHERE cb.scheduled_for >= $1 AND cb.scheduled_for < $2
   AND cb.status = ANY($3::text[])
 ORDER BY cb.scheduled_for, cb.callback_id"""

# Test drives (migration 0006): the inventory hold the appointment's demo car was booked from.
# appointments_pkey.
SELECT_CAR_HOLD = "SELECT car_hold_id FROM appointments WHERE appointment_id = $1"

# appointments_pkey; in the appointment's own transaction.
SET_CAR_HOLD = "UPDATE appointments SET car_hold_id = $2 WHERE appointment_id = $1"

# appointments_pkey. A move's switch to its new car: only from the car it started from, so a
# move or cancel that got there first makes this one find no row.
SWAP_CAR_HOLD = """
UPDATE appointments SET car_hold_id = $3, updated_at = now()
 WHERE appointment_id = $1 AND car_hold_id = $2
RETURNING appointment_id"""

# bookings_pkey. Taken first by a test drive's cancel (lock order: booking, appointment,
# customer), so a move of the same appointment either committed before it or waits for it.
LOCK_BOOKING = "SELECT 1 FROM bookings WHERE booking_id = $1 FOR UPDATE"

# idempotency_keys_pkey: the test-drive saga's attempts that began ($1: booked an appointment,
# or began a change) and were never settled ($2), older than $3 seconds and younger than $5,
# oldest first.
SELECT_UNSETTLED_TEST_DRIVES = """
SELECT b.key
  FROM idempotency_keys b
 WHERE b.scope = $1
   AND b.created_at < now() - make_interval(secs => $3)
   AND b.created_at > now() - make_interval(secs => $5)
   AND NOT EXISTS (SELECT 1 FROM idempotency_keys s WHERE s.scope = $2 AND s.key = b.key)
 ORDER BY b.created_at
 LIMIT $4"""

SELECT_BOOKING_STATUS = "SELECT status FROM bookings WHERE booking_id = $1"
