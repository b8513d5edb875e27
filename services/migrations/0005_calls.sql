-- Calls (summary and cost) and the analytics fed by ended calls.
-- Flows, channels, outcomes, tool outcomes, markers and categories are plain text here: they
-- are checked in services/calls/vocabulary.py, the one place they are spelt, so adding a flow
-- needs no migration. The structure (what each kind of event must carry) is checked here.

-- One row per call an agent handled: usage summed as events arrive, and once the call ends
-- its outcome, its cost and the whole end_call answer (result), which replays return as is.
CREATE TABLE calls (
    call_id               text PRIMARY KEY,
    flow                  text NOT NULL,
    channel               text NOT NULL,
    caller_phone          text,
    started_at            timestamptz NOT NULL,
    ended_at              timestamptz,
    outcome               text,
    booked                boolean NOT NULL DEFAULT false,
    stt_audio_seconds     numeric(14, 3) NOT NULL DEFAULT 0,
    llm_prompt_tokens     bigint NOT NULL DEFAULT 0,
    llm_cached_tokens     bigint NOT NULL DEFAULT 0,
    llm_completion_tokens bigint NOT NULL DEFAULT 0,
    tts_characters        bigint NOT NULL DEFAULT 0,
    cost_usd              numeric(14, 6),
    result                jsonb,
    created_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT calls_end_is_all_or_nothing CHECK (
        (ended_at IS NULL) = (outcome IS NULL)
        AND (ended_at IS NULL) = (cost_usd IS NULL)
        AND (ended_at IS NULL) = (result IS NULL)),
    CONSTRAINT calls_end_after_start CHECK (ended_at IS NULL OR ended_at >= started_at),
    CONSTRAINT calls_usage_not_negative CHECK (
        stt_audio_seconds >= 0 AND llm_prompt_tokens >= 0 AND llm_cached_tokens >= 0
        AND llm_completion_tokens >= 0 AND tts_characters >= 0 AND cost_usd >= 0),
    CONSTRAINT calls_cached_within_prompt CHECK (llm_cached_tokens <= llm_prompt_tokens)
);
-- active_calls(): count of calls not yet ended.
CREATE INDEX calls_active_idx ON calls (started_at) WHERE ended_at IS NULL;
-- AnalyticsService.catch_up(): ended calls started in a window.
CREATE INDEX calls_ended_started_at_idx ON calls (started_at) WHERE ended_at IS NOT NULL;

-- Everything recorded during a call, oldest first by event_id.
CREATE TABLE call_events (
    event_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id      text NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('tool', 'shared', 'usage', 'marker')),
    at           timestamptz NOT NULL,
    tool         text,
    latency_ms   double precision,
    tool_outcome text,
    category     text,
    info_key     text,
    info_value   text,
    usage        jsonb,
    marker       text,
    reference    text,
    CONSTRAINT call_events_tool_complete CHECK (
        kind <> 'tool' OR (tool IS NOT NULL AND latency_ms >= 0 AND tool_outcome IS NOT NULL)),
    CONSTRAINT call_events_shared_complete CHECK (
        kind <> 'shared' OR (category IS NOT NULL AND info_key IS NOT NULL
                             AND info_value IS NOT NULL)),
    CONSTRAINT call_events_usage_complete CHECK (kind <> 'usage' OR usage IS NOT NULL),
    CONSTRAINT call_events_marker_complete CHECK (kind <> 'marker' OR marker IS NOT NULL)
);
-- get_call() and end_call(): a call's events in order.
CREATE INDEX call_events_call_idx ON call_events (call_id, event_id);
-- Analytics: tool latency percentiles and shared categories of the calls in a window, read
-- by call_id from the window's calls without touching the heap.
CREATE INDEX call_events_tool_latency_idx ON call_events (call_id) INCLUDE (tool, latency_ms)
    WHERE kind = 'tool';
CREATE INDEX call_events_shared_category_idx ON call_events (call_id) INCLUDE (category)
    WHERE kind = 'shared';

-- Analytics, one row per ended call it was told about (or caught up on). The primary key is
-- what makes feeding a call twice count it once; the day is the call's start day in the
-- business time zone.
CREATE TABLE analytics_calls (
    call_id     text PRIMARY KEY REFERENCES calls (call_id) ON DELETE CASCADE,
    day         date NOT NULL,
    flow        text NOT NULL,
    outcome     text NOT NULL,
    booked      boolean NOT NULL,
    cost_usd    numeric(14, 6) NOT NULL CHECK (cost_usd >= 0),
    recorded_at timestamptz NOT NULL DEFAULT now()
);
-- summary(): cost percentiles per day and flow over a window; the join to the call's events.
CREATE INDEX analytics_calls_window_idx ON analytics_calls (day, flow) INCLUDE (cost_usd, call_id);

-- The per-(day, flow, outcome) rollup: counts and money, summed as calls are fed in.
CREATE TABLE analytics_daily (
    day      date NOT NULL,
    flow     text NOT NULL,
    outcome  text NOT NULL,
    calls    integer NOT NULL CHECK (calls >= 0),
    booked   integer NOT NULL CHECK (booked >= 0 AND booked <= calls),
    cost_usd numeric(16, 6) NOT NULL CHECK (cost_usd >= 0),
    PRIMARY KEY (day, flow, outcome)
);
