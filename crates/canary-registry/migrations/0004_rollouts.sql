-- Staged rollouts judged on live session telemetry, runner tokens and org freezes.

-- One finished session as a runner reported it. `received_at` is the control plane's clock (what
-- history is ordered by); `started_at` is the runner's, bounded on arrival.
CREATE TABLE telemetry_sessions (
    session          TEXT PRIMARY KEY,
    runner           TEXT NOT NULL,
    org              TEXT NOT NULL,
    build_id         TEXT NOT NULL REFERENCES runner_builds(id),
    started_at       TEXT NOT NULL,
    received_at      TEXT NOT NULL,
    start_latency_ms BIGINT,            -- NULL: the session never started
    outcome          TEXT NOT NULL CHECK (outcome IN ('ok', 'failed', 'disconnected', 'timed_out')),
    commands         BIGINT NOT NULL,
    commands_failed  BIGINT NOT NULL,
    approvals        BIGINT NOT NULL,
    approval_wait_ms BIGINT NOT NULL,
    tokens           BIGINT NOT NULL,
    cost_micros      BIGINT NOT NULL,   -- USD millionths
    duration_ms      BIGINT NOT NULL
);
CREATE INDEX telemetry_sessions_build ON telemetry_sessions (build_id, received_at);

-- Per build and second of arrival: what decisions and KPIs read, so they stay fast as sessions grow.
CREATE TABLE telemetry_rollups (
    build_id         TEXT NOT NULL,
    second           TEXT NOT NULL,     -- YYYY-MM-DDTHH:MM:SS
    sessions         BIGINT NOT NULL,
    started          BIGINT NOT NULL,
    ok               BIGINT NOT NULL,
    failed           BIGINT NOT NULL,
    disconnected     BIGINT NOT NULL,
    timed_out        BIGINT NOT NULL,
    commands         BIGINT NOT NULL,
    commands_failed  BIGINT NOT NULL,
    approvals        BIGINT NOT NULL,
    approval_wait_ms BIGINT NOT NULL,
    tokens           BIGINT NOT NULL,
    cost_micros      BIGINT NOT NULL,
    duration_ms      BIGINT NOT NULL,
    start_latency_ms BIGINT NOT NULL,
    PRIMARY KEY (build_id, second)
);

-- Log-scale histograms per build and minute of arrival (YYYY-MM-DDTHH:MM): `start` (start latency) and `approval` (wait per
-- approval), for percentiles without reading sessions.
CREATE TABLE telemetry_histograms (
    build_id TEXT NOT NULL,
    minute   TEXT NOT NULL,
    metric   TEXT NOT NULL,
    bucket   BIGINT NOT NULL,
    n        BIGINT NOT NULL,
    PRIMARY KEY (build_id, minute, metric, bucket)
);

CREATE TABLE rollouts (
--sqlite:    id              INTEGER PRIMARY KEY AUTOINCREMENT,
--postgres:    id              BIGSERIAL PRIMARY KEY,
    channel         TEXT NOT NULL,
    build_id        TEXT NOT NULL REFERENCES runner_builds(id),
    baseline_id     TEXT NOT NULL REFERENCES runner_builds(id),
    steps           TEXT NOT NULL,      -- JSON array of percentages
    step            BIGINT NOT NULL,    -- index into steps
    state           TEXT NOT NULL CHECK (state IN ('running', 'paused', 'completed', 'aborted')),
    bake_ms         BIGINT NOT NULL,
    min_sessions    BIGINT NOT NULL,
    started_at      TEXT NOT NULL,
    step_started_at TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    revision        BIGINT NOT NULL,    -- every transition adds one; a transition names the one it follows
    note            TEXT NOT NULL,      -- the last check, e.g. why it holds
    actor           TEXT NOT NULL
);
CREATE INDEX rollouts_channel ON rollouts (channel, state);

ALTER TABLE rollout_events ADD COLUMN rollout_id BIGINT;
ALTER TABLE rollout_events ADD COLUMN step BIGINT;
ALTER TABLE rollout_events ADD COLUMN figures TEXT;   -- JSON: what decided it

CREATE TABLE runner_tokens (
    id         TEXT PRIMARY KEY,        -- the token's public part
    runner     TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,    -- SHA-256 of the whole token, hex
    created_at TEXT NOT NULL,
    actor      TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX runner_tokens_runner ON runner_tokens (runner);

CREATE TABLE org_freezes (
    org    TEXT PRIMARY KEY,
    since  TEXT NOT NULL,
    actor  TEXT NOT NULL,
    reason TEXT NOT NULL
);
