-- Test drives: the appointment names the inventory hold its demo car was booked from. Inventory
-- finds the car's rental by that hold (bookings.hold_id is unique), so a cancel or a move of the
-- appointment can cancel or move the car too. The test-drive saga writes it in the appointment's
-- own transaction; a move swaps it to the new car's hold in the transaction that moves the desk.
-- NULL for every other appointment. Read and swapped by appointment id only: no index.
ALTER TABLE appointments
    ADD COLUMN car_hold_id text CHECK (char_length(car_hold_id) <= 100);

-- Test drives booked before this migration: the saga recorded the car's hold with the step that
-- booked the appointment (services/scheduling/service.py, scope scheduling.test_drive.booked).
UPDATE appointments a
   SET car_hold_id = k.response ->> 'hold_id'
  FROM idempotency_keys k
 WHERE k.scope = 'scheduling.test_drive.booked'
   AND k.response ->> 'appointment_id' = a.appointment_id::text;
