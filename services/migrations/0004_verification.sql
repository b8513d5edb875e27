-- Verification: the registry the default provider checks against, and the audit of every check.
-- A confirm of a unit that requires a certification or an insurance minimum looks here (through
-- the verification service) for a *verified* row of the hold's call.

-- Registry lookups accept what a caller says: "BL 100234" finds BL-100234, "maria  gonzalez"
-- finds Maria Gonzalez. The same functions build the stored keys and the looked-up ones, so the
-- two can never disagree.
CREATE FUNCTION registry_code_key(code text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN regexp_replace(upper(code), '[^A-Z0-9]', '', 'g');

CREATE FUNCTION registry_name_key(name text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN btrim(regexp_replace(lower(name), '[^[:alnum:]]+', ' ', 'g'));

-- Business licences by number; a suspended licence is on file but does not count.
CREATE TABLE registry_business_licences (
    licence_number text PRIMARY KEY CHECK (licence_number ~ '^[A-Z0-9][A-Z0-9-]{2,31}$'),
    licence_key    text GENERATED ALWAYS AS (registry_code_key(licence_number)) STORED UNIQUE,
    state          text NOT NULL CHECK (state ~ '^[A-Z]{2}$'),
    business_name  text NOT NULL CHECK (char_length(business_name) <= 200),
    standing       text NOT NULL DEFAULT 'active' CHECK (standing IN ('active', 'suspended')),
    expires_on     date NOT NULL
);

-- Job sites and the heaviest weight class their last safety inspection allows.
CREATE TABLE registry_job_sites (
    site_id               text PRIMARY KEY CHECK (site_id ~ '^[A-Z0-9][A-Z0-9-]{2,31}$'),
    site_key              text GENERATED ALWAYS AS (registry_code_key(site_id)) STORED UNIQUE,
    address               text NOT NULL CHECK (char_length(address) <= 200),
    address_key           text GENERATED ALWAYS AS (registry_name_key(address)) STORED UNIQUE,
    rated_weight_class    text NOT NULL CHECK (rated_weight_class IN ('light', 'medium', 'heavy')),
    inspection_expires_on date NOT NULL
);

-- Equipment operators, found by their operator licence id or by name.
CREATE TABLE registry_operators (
    operator_id  text PRIMARY KEY CHECK (operator_id ~ '^[A-Z0-9][A-Z0-9-]{2,31}$'),
    operator_key text GENERATED ALWAYS AS (registry_code_key(operator_id)) STORED UNIQUE,
    name         text NOT NULL CHECK (char_length(name) <= 120),
    name_key     text GENERATED ALWAYS AS (registry_name_key(name)) STORED
);
CREATE INDEX registry_operators_name_key_idx ON registry_operators (name_key);

-- A supervised certification (a trainee's) is on file but does not let them operate alone.
CREATE TABLE registry_operator_certifications (
    operator_id   text NOT NULL REFERENCES registry_operators (operator_id),
    certification text NOT NULL CHECK (certification ~ '^[a-z][a-z0-9_]{1,31}$'),
    level         text NOT NULL DEFAULT 'full' CHECK (level IN ('full', 'supervised')),
    expires_on    date NOT NULL,
    PRIMARY KEY (operator_id, certification)
);

CREATE TABLE registry_insurance_policies (
    policy_number   text PRIMARY KEY CHECK (policy_number ~ '^[A-Z0-9][A-Z0-9-]{2,31}$'),
    policy_key      text GENERATED ALWAYS AS (registry_code_key(policy_number)) STORED UNIQUE,
    insurer         text NOT NULL CHECK (char_length(insurer) <= 120),
    holder_name     text NOT NULL CHECK (char_length(holder_name) <= 200),
    coverage_amount numeric(14, 2) NOT NULL CHECK (coverage_amount > 0),
    expires_on      date NOT NULL
);

-- Every check a call asked for, whatever the answer (verified, failed, provider unavailable).
-- Rows are never updated or deleted: this is the audit trail, and what a confirm relies on.
CREATE TABLE verifications (
    verification_id uuid PRIMARY KEY,
    call_id         text NOT NULL CHECK (char_length(call_id) <= 128),
    check_kind      text NOT NULL CHECK (check_kind IN (
                        'business_licence', 'site_safety', 'operator_certification', 'insurance')),
    subject         text NOT NULL CHECK (char_length(subject) <= 200),
    -- What was asked of the subject: a state, a weight class, a certification, an amount.
    requirement     text CHECK (char_length(requirement) <= 64),
    status          text NOT NULL CHECK (status IN ('verified', 'failed')),
    reason          text NOT NULL CHECK (reason IN (
                        'valid', 'expired', 'insufficient', 'unknown', 'mismatch',
                        'provider_unavailable')),
    message         text NOT NULL,
    facts           jsonb NOT NULL DEFAULT '{}',
    -- What a confirm matches on: the certification held, the coverage an insurer confirmed.
    certification   text,
    coverage_amount numeric(14, 2),
    provider        text NOT NULL,
    checked_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT verifications_verified_means_valid CHECK ((status = 'verified') = (reason = 'valid'))
);
-- list_for_call and missing_requirements both read one call's rows, in order.
CREATE INDEX verifications_call_id_idx ON verifications (call_id, checked_at);
