-- Candidate and baseline drawn from the same orgs: each assignment a rollout judges (a session
-- of the ring it is in, on either side; not pinned, frozen or of another ring) carries the
-- rollout's cohort label, `<rollout id>:<ring>`, and the rollups are kept per cohort as well as
-- per build and second. A decision reads both sides under its rollout's label; the KPIs and the
-- dashboard sum every cohort. Sessions rolled up before this carry `''`: a rollout running
-- across the upgrade judges its current step on what arrives after it.
ALTER TABLE session_assignments ADD COLUMN cohort TEXT NOT NULL DEFAULT '';

CREATE TABLE telemetry_rollups_by_cohort (
    build_id         TEXT NOT NULL,
    cohort           TEXT NOT NULL,
    second           TEXT NOT NULL,
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
    cost_sq          REAL NOT NULL DEFAULT 0,
    tokens_sq        REAL NOT NULL DEFAULT 0,
    approvals_sq     REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (build_id, cohort, second)
);
INSERT INTO telemetry_rollups_by_cohort
    SELECT build_id, '', second, sessions, started, ok, failed, disconnected, timed_out, commands, commands_failed,
           approvals, approval_wait_ms, tokens, cost_micros, duration_ms, start_latency_ms, cost_sq, tokens_sq, approvals_sq
    FROM telemetry_rollups;
DROP TABLE telemetry_rollups;
ALTER TABLE telemetry_rollups_by_cohort RENAME TO telemetry_rollups;

CREATE TABLE telemetry_histograms_by_cohort (
    build_id TEXT NOT NULL,
    cohort   TEXT NOT NULL,
    minute   TEXT NOT NULL,
    metric   TEXT NOT NULL,
    bucket   BIGINT NOT NULL,
    n        BIGINT NOT NULL,
    PRIMARY KEY (build_id, cohort, minute, metric, bucket)
);
INSERT INTO telemetry_histograms_by_cohort SELECT build_id, '', minute, metric, bucket, n FROM telemetry_histograms;
DROP TABLE telemetry_histograms;
ALTER TABLE telemetry_histograms_by_cohort RENAME TO telemetry_histograms;

CREATE TABLE assignment_rollups_by_cohort (
    build_id TEXT NOT NULL,
    cohort   TEXT NOT NULL,
    second   TEXT NOT NULL,
    assigned BIGINT NOT NULL,
    reported BIGINT NOT NULL,
    PRIMARY KEY (build_id, cohort, second)
);
INSERT INTO assignment_rollups_by_cohort SELECT build_id, '', second, assigned, reported FROM assignment_rollups;
DROP TABLE assignment_rollups;
ALTER TABLE assignment_rollups_by_cohort RENAME TO assignment_rollups;
