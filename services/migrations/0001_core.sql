-- The reservation primitive's truth, and idempotency records shared by every service.
CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- A confirmed booking is a resource held over a time range. Appointments (a bay or clinician
-- over 30-minute cells) and rentals (a unit over days) are both rows here; their details live
-- in tables of their own services that reference booking_id.
CREATE TABLE bookings (
    booking_id    uuid PRIMARY KEY,
    resource_id   text NOT NULL,
    during        tstzrange NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('appointment', 'rental', 'test_drive')),
    status        text NOT NULL DEFAULT 'confirmed' CHECK (status IN ('confirmed', 'cancelled')),
    reference     text NOT NULL UNIQUE,
    hold_id       text UNIQUE,
    call_id       text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    cancelled_at  timestamptz,
    cancel_reason text,
    CONSTRAINT bookings_range_is_half_open
        CHECK (NOT isempty(during) AND lower_inc(during) AND NOT upper_inc(during)
               AND NOT lower_inf(during) AND NOT upper_inf(during)),
    -- The invariant: if Redis loses every hold, PostgreSQL still refuses a double booking.
    CONSTRAINT bookings_no_overlap
        EXCLUDE USING gist (resource_id WITH =, during WITH &&) WHERE (status <> 'cancelled')
);
CREATE INDEX bookings_call_id_idx ON bookings (call_id) WHERE call_id IS NOT NULL;
CREATE INDEX bookings_created_at_idx ON bookings (created_at);

-- A write a caller may repeat (LLM or network retries) stores its first answer here, in the
-- same transaction as the write, and a replay returns it.
CREATE TABLE idempotency_keys (
    scope        text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    response     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
