-- Inventory: rental equipment and demo vehicles, and the detail row of each rental booking.

-- A unit is held by the day (cell_minutes = 1440, rentals) or on a short grid (test drives of
-- demo vehicles). Prices are per day; max_rate is the ceiling of what a negotiation may agree.
CREATE TABLE units (
    unit_id                text PRIMARY KEY
                           CHECK (unit_id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    name                   text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    category               text NOT NULL CHECK (category ~ '^[a-z][a-z_]{0,39}$'),
    description            text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    status                 text NOT NULL DEFAULT 'AVAILABLE'
                           CHECK (status IN ('AVAILABLE', 'RENTED', 'MAINTENANCE')),
    daily_rate             numeric(10, 2) NOT NULL CHECK (daily_rate >= 0),
    max_rate               numeric(10, 2) NOT NULL,
    required_certification text CHECK (required_certification ~ '^[a-z][a-z_]{0,39}$'),
    min_insurance          numeric(12, 2) CHECK (min_insurance > 0),
    location               text NOT NULL CHECK (length(location) BETWEEN 1 AND 200),
    weight_class           text CHECK (weight_class IN ('light', 'medium', 'heavy')),
    cell_minutes           integer NOT NULL DEFAULT 1440
                           CHECK (cell_minutes = 1440 OR cell_minutes IN (15, 30, 60)),
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT units_max_rate_not_below_daily_rate CHECK (max_rate >= daily_rate),
    -- What ranked search reads: words weighted name > category > description, and a short
    -- text for typo-tolerant trigram matching.
    search_doc tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', name), 'A')
        || setweight(to_tsvector('english', replace(category, '_', ' ')), 'B')
        || setweight(to_tsvector('english', description), 'C')
    ) STORED,
    search_name text GENERATED ALWAYS AS (
        lower(name || ' ' || replace(category, '_', ' '))
    ) STORED
);
CREATE INDEX units_search_doc_idx ON units USING gin (search_doc);
CREATE INDEX units_search_name_trgm_idx ON units USING gin (search_name gin_trgm_ops);
-- Browsing a category, cheapest first, and the max-price filter.
CREATE INDEX units_category_rate_idx ON units (category, daily_rate);
CREATE INDEX units_daily_rate_idx ON units (daily_rate);

-- One row per rental or test-drive booking, written in the booking's own transaction.
CREATE TABLE rentals (
    booking_id        uuid PRIMARY KEY REFERENCES bookings (booking_id),
    unit_id           text NOT NULL REFERENCES units (unit_id),
    call_id           text,
    days              integer CHECK (days > 0),
    minutes           integer CHECK (minutes > 0),
    list_daily_rate   numeric(10, 2) NOT NULL CHECK (list_daily_rate >= 0),
    agreed_daily_rate numeric(10, 2) NOT NULL CHECK (agreed_daily_rate >= 0),
    total             numeric(12, 2) NOT NULL CHECK (total >= 0),
    negotiated        boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rentals_days_or_minutes CHECK ((days IS NULL) <> (minutes IS NULL))
);
CREATE INDEX rentals_unit_id_idx ON rentals (unit_id);
CREATE INDEX rentals_call_id_idx ON rentals (call_id) WHERE call_id IS NOT NULL;
