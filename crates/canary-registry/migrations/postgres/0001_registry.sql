-- Known-good registry, PostgreSQL dialect: the schema of migrations/sqlite/ with PostgreSQL types.

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
    id               TEXT PRIMARY KEY,
    image_ref        TEXT NOT NULL,
    runner_version   TEXT NOT NULL,
    adapters         TEXT NOT NULL,
    runtime_versions TEXT NOT NULL,
    created_at       TEXT NOT NULL
);

CREATE TABLE compat_results (
    id               BIGSERIAL PRIMARY KEY,
    build_id         TEXT NOT NULL REFERENCES runner_builds(id),
    run_id           TEXT NOT NULL,
    suite            TEXT NOT NULL,
    repo             TEXT NOT NULL,
    case_id          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pass', 'fail', 'flaky', 'timed_out', 'infra_error')),
    attempts         BIGINT NOT NULL,
    duration_ms      BIGINT NOT NULL,
    session_start_ms BIGINT,
    metrics          TEXT NOT NULL,
    report_path      TEXT NOT NULL,
    recorded_at      TEXT NOT NULL,
    UNIQUE (run_id, case_id)
);
CREATE INDEX compat_results_cell ON compat_results (build_id, suite, repo, recorded_at);

CREATE TABLE channel_releases (
    id          BIGSERIAL PRIMARY KEY,
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
    pinned_build_id TEXT REFERENCES runner_builds(id),
    since           TEXT NOT NULL,
    actor           TEXT NOT NULL
);

CREATE TABLE rollout_events (
    id         BIGSERIAL PRIMARY KEY,
    org        TEXT,
    channel    TEXT,
    from_build TEXT,
    to_build   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    ts         TEXT NOT NULL,
    actor      TEXT NOT NULL
);

CREATE TABLE audit_log (
    id       BIGSERIAL PRIMARY KEY,
    ts       TEXT NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason   TEXT NOT NULL,
    evidence TEXT NOT NULL
);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
