--sqlite:-- Known-good registry, SQLite dialect. migrations/postgres/ holds the same schema for PostgreSQL;
--sqlite:-- the queries in src/registry are written once for both.
--postgres:-- Known-good registry, PostgreSQL dialect: the schema of migrations/sqlite/ with PostgreSQL types.

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
--sqlite:    id               TEXT PRIMARY KEY,   -- image digest, sha256:...
--postgres:    id               TEXT PRIMARY KEY,
    image_ref        TEXT NOT NULL,
    runner_version   TEXT NOT NULL,
--sqlite:    adapters         TEXT NOT NULL,      -- JSON array
--sqlite:    runtime_versions TEXT NOT NULL,      -- JSON object: provider -> version
--postgres:    adapters         TEXT NOT NULL,
--postgres:    runtime_versions TEXT NOT NULL,
    created_at       TEXT NOT NULL
);

CREATE TABLE compat_results (
--sqlite:    id               INTEGER PRIMARY KEY AUTOINCREMENT,
--postgres:    id               BIGSERIAL PRIMARY KEY,
    build_id         TEXT NOT NULL REFERENCES runner_builds(id),
    run_id           TEXT NOT NULL,
    suite            TEXT NOT NULL,
    repo             TEXT NOT NULL,
    case_id          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pass', 'fail', 'flaky', 'timed_out', 'infra_error')),
--sqlite:    attempts         INTEGER NOT NULL,
--postgres:    attempts         BIGINT NOT NULL,
    duration_ms      BIGINT NOT NULL,
    session_start_ms BIGINT,
--sqlite:    metrics          TEXT NOT NULL,      -- JSON
--postgres:    metrics          TEXT NOT NULL,
    report_path      TEXT NOT NULL,
    recorded_at      TEXT NOT NULL,
    UNIQUE (run_id, case_id)
);
CREATE INDEX compat_results_cell ON compat_results (build_id, suite, repo, recorded_at);

--sqlite:-- The known-good history of each channel: one row per promotion (or rollback) to it.
CREATE TABLE channel_releases (
--sqlite:    id          INTEGER PRIMARY KEY AUTOINCREMENT,
--postgres:    id          BIGSERIAL PRIMARY KEY,
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
--sqlite:    pinned_build_id TEXT REFERENCES runner_builds(id),  -- NULL: the org follows its channel
--postgres:    pinned_build_id TEXT REFERENCES runner_builds(id),
    since           TEXT NOT NULL,
    actor           TEXT NOT NULL
);

CREATE TABLE rollout_events (
--sqlite:    id         INTEGER PRIMARY KEY AUTOINCREMENT,
--postgres:    id         BIGSERIAL PRIMARY KEY,
    org        TEXT,
    channel    TEXT,
    from_build TEXT,
    to_build   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    ts         TEXT NOT NULL,
    actor      TEXT NOT NULL
);

CREATE TABLE audit_log (
--sqlite:    id       INTEGER PRIMARY KEY AUTOINCREMENT,
--postgres:    id       BIGSERIAL PRIMARY KEY,
    ts       TEXT NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason   TEXT NOT NULL,
--sqlite:    evidence TEXT NOT NULL              -- JSON
--postgres:    evidence TEXT NOT NULL
);
--sqlite:CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
--sqlite:BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
--sqlite:CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
--sqlite:BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
--postgres:CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
--postgres:BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
--postgres:CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
--postgres:FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
