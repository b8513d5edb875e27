-- Scheduling: the appointment desks. A booking's time, resource and status live in `bookings`
-- (0001); the rows here say what was booked, for whom, and what we learned about them.

-- What a caller can book: how long it takes, what it costs, and which pool of resources serves it.
CREATE TABLE service_types (
    service_type_id  text PRIMARY KEY CHECK (service_type_id ~ '^[a-z][a-z0-9_]{0,47}$'),
    name             text NOT NULL,
    description      text NOT NULL DEFAULT '',
    duration_minutes integer NOT NULL CHECK (duration_minutes BETWEEN 5 AND 480),
    price_min_usd    numeric(10, 2) NOT NULL CHECK (price_min_usd >= 0),
    price_max_usd    numeric(10, 2) NOT NULL,
    resource_pool    text NOT NULL,
    active           boolean NOT NULL DEFAULT true,
    CONSTRAINT service_types_price_range CHECK (price_max_usd >= price_min_usd)
);
CREATE INDEX service_types_pool_idx ON service_types (resource_pool) WHERE active;

-- The people and places an appointment occupies: service bays, clinicians, a sales desk.
-- resource_id is the one the reservation primitive books (its pattern, see reservations.py).
CREATE TABLE scheduling_resources (
    resource_id text PRIMARY KEY CHECK (resource_id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    pool        text NOT NULL,
    name        text NOT NULL,
    active      boolean NOT NULL DEFAULT true
);
CREATE INDEX scheduling_resources_pool_idx ON scheduling_resources (pool, resource_id) WHERE active;

-- Callers are known by their phone number in E.164; preferences are learned from bookings.
CREATE TABLE customers (
    customer_id           uuid PRIMARY KEY,
    phone                 text NOT NULL UNIQUE CHECK (phone ~ '^\+[1-9][0-9]{7,14}$'),
    name                  text CHECK (char_length(name) <= 120),
    email                 text CHECK (char_length(email) <= 254),
    preferred_time_of_day text CHECK (preferred_time_of_day IN ('morning', 'afternoon')),
    preferred_weekdays    text[] NOT NULL DEFAULT '{}',
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE vehicles (
    vehicle_id  uuid PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES customers (customer_id),
    year        integer CHECK (year BETWEEN 1900 AND 2100),
    make        text NOT NULL CHECK (char_length(make) <= 60),
    model       text NOT NULL CHECK (char_length(model) <= 60),
    plate       text CHECK (char_length(plate) <= 16),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vehicles_customer_idx ON vehicles (customer_id, created_at);

-- One appointment per booking; cancelling marks the booking, never deletes either row.
CREATE TABLE appointments (
    appointment_id  uuid PRIMARY KEY,
    booking_id      uuid NOT NULL UNIQUE REFERENCES bookings (booking_id),
    customer_id     uuid NOT NULL REFERENCES customers (customer_id),
    service_type_id text NOT NULL REFERENCES service_types (service_type_id),
    vehicle_id      uuid REFERENCES vehicles (vehicle_id),
    notes           text CHECK (char_length(notes) <= 1000),
    call_id         text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX appointments_customer_idx ON appointments (customer_id);
CREATE INDEX appointments_call_id_idx ON appointments (call_id) WHERE call_id IS NOT NULL;

-- A promise to call someone back when no human was free, at a time inside business hours.
CREATE TABLE callbacks (
    callback_id   uuid PRIMARY KEY,
    customer_id   uuid NOT NULL REFERENCES customers (customer_id),
    reason        text NOT NULL CHECK (char_length(reason) <= 500),
    scheduled_for timestamptz NOT NULL,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'cancelled')),
    call_id       text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX callbacks_scheduled_for_idx ON callbacks (scheduled_for);
CREATE INDEX callbacks_customer_idx ON callbacks (customer_id);
