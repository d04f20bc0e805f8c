-- Known-good registry, SQLite dialect. migrations/postgres/ holds the same schema for PostgreSQL;
-- the queries in src/registry are written once for both.

CREATE TABLE runtime_versions (
    provider    TEXT NOT NULL,
    version     TEXT NOT NULL,
    released_at TEXT,
    source      TEXT NOT NULL,
    channel     TEXT NOT NULL DEFAULT 'stable',
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (provider, version)
);

CREATE TABLE runner_builds (
    id               TEXT PRIMARY KEY,   -- image digest, sha256:...
    image_ref        TEXT NOT NULL,
    runner_version   TEXT NOT NULL,
    adapters         TEXT NOT NULL,      -- JSON array
    runtime_versions TEXT NOT NULL,      -- JSON object: provider -> version
    created_at       TEXT NOT NULL
);

CREATE TABLE compat_results (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    build_id         TEXT NOT NULL REFERENCES runner_builds(id),
    run_id           TEXT NOT NULL,
    suite            TEXT NOT NULL,
    repo             TEXT NOT NULL,
    case_id          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pass', 'fail', 'flaky', 'timed_out', 'infra_error')),
    attempts         INTEGER NOT NULL,
    duration_ms      BIGINT NOT NULL,
    session_start_ms BIGINT,
    metrics          TEXT NOT NULL,      -- JSON
    report_path      TEXT NOT NULL,
    recorded_at      TEXT NOT NULL,
    UNIQUE (run_id, case_id)
);
CREATE INDEX compat_results_cell ON compat_results (build_id, suite, repo, recorded_at);

-- The known-good history of each channel: one row per promotion (or rollback) to it.
CREATE TABLE channel_releases (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    channel     TEXT NOT NULL,
    build_id    TEXT NOT NULL REFERENCES runner_builds(id),
    released_at TEXT NOT NULL,
    actor       TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('promote', 'rollback'))
);
CREATE INDEX channel_releases_channel ON channel_releases (channel, id);

CREATE TABLE org_runtime_pins (
    org             TEXT PRIMARY KEY,
    channel         TEXT NOT NULL,
    pinned_build_id TEXT REFERENCES runner_builds(id),  -- NULL: the org follows its channel
    since           TEXT NOT NULL,
    actor           TEXT NOT NULL
);

CREATE TABLE rollout_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    org        TEXT,
    channel    TEXT,
    from_build TEXT,
    to_build   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    ts         TEXT NOT NULL,
    actor      TEXT NOT NULL
);

CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    ts       TEXT NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason   TEXT NOT NULL,
    evidence TEXT NOT NULL              -- JSON
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
