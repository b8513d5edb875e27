"""Named queries of the inventory service; each one has an index in 0003_inventory.sql."""

_UNIT_COLUMNS = """unit_id, name, category, description, status, daily_rate, max_rate,
    required_certification, min_insurance, location, weight_class, cell_minutes"""

# units_pkey
SELECT_UNIT = f"SELECT {_UNIT_COLUMNS} FROM units WHERE unit_id = $1"  # noqa: S608

# units_pkey
SET_UNIT_STATUS = f"""
UPDATE units SET status = $2, updated_at = now() WHERE unit_id = $1
RETURNING {_UNIT_COLUMNS}"""  # noqa: S608

# units_search_doc_idx (full text, any of the words) and units_search_name_trgm_idx (typos).
# $1 words, $2 categories or NULL, $3 daily-rate ceiling or NULL, $4 limit.
SEARCH_UNITS_BY_WORDS = f"""
SELECT {_UNIT_COLUMNS},
       ts_rank_cd(u.search_doc, q.words) + word_similarity($1, u.search_name) AS score
  FROM units u,
       -- Any of the words may match (OR), and units matching more of them rank higher.
       (SELECT NULLIF(replace(plainto_tsquery('english', $1)::text, '&', '|'), '')::tsquery
                   AS words) q
 WHERE (u.search_doc @@ q.words OR $1 <% u.search_name)
   AND ($2::text[] IS NULL OR u.category = ANY($2::text[]))
   AND ($3::numeric IS NULL OR u.daily_rate <= $3::numeric)
 ORDER BY score DESC, u.status = 'AVAILABLE' DESC, u.daily_rate, u.unit_id
 LIMIT $4"""  # noqa: S608

# units_category_rate_idx, units_daily_rate_idx
LIST_UNITS = f"""
SELECT {_UNIT_COLUMNS}
  FROM units u
 WHERE ($1::text[] IS NULL OR u.category = ANY($1::text[]))
   AND ($2::numeric IS NULL OR u.daily_rate <= $2::numeric)
 ORDER BY u.category, u.status = 'AVAILABLE' DESC, u.daily_rate, u.unit_id
 LIMIT $3"""  # noqa: S608

# rentals_pkey
INSERT_RENTAL = """
INSERT INTO rentals (booking_id, unit_id, call_id, days, minutes, list_daily_rate,
                     agreed_daily_rate, total, negotiated)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"""

# rentals_pkey, bookings_pkey, units_pkey
SELECT_RENTAL = """
SELECT b.booking_id, b.reference, b.during, b.kind, b.status, b.call_id, b.created_at,
       b.cancel_reason, r.unit_id, u.name AS unit_name, r.days, r.minutes,
       r.list_daily_rate, r.agreed_daily_rate, r.total, r.negotiated
  FROM rentals r
  JOIN bookings b ON b.booking_id = r.booking_id
  JOIN units u ON u.unit_id = r.unit_id
 WHERE r.booking_id = $1"""

# rentals_pkey, units_pkey
SELECT_RENTAL_GRID = """
SELECT u.cell_minutes FROM rentals r JOIN units u ON u.unit_id = r.unit_id
 WHERE r.booking_id = $1"""

# The test drive (a sales-desk appointment, still confirmed) a demo car's booking belongs to:
# the saga records the car's hold on the appointment (migration 0006). Read only to refuse a
# direct cancel of the car, so the scan of appointments (no index on car_hold_id) is rare.
SELECT_TEST_DRIVE_OF_CAR = """
SELECT a.appointment_id, desk.during
  FROM bookings car
  JOIN appointments a ON a.car_hold_id = car.hold_id
  JOIN bookings desk ON desk.booking_id = a.booking_id
 WHERE car.booking_id = $1 AND car.kind = 'test_drive' AND car.status = 'confirmed'
   AND desk.status = 'confirmed'
 LIMIT 1"""
