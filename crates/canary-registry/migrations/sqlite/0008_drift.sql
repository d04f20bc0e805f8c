-- Drift: `drift` joins the result statuses (SQLite cannot change a CHECK in place, so the
-- table is rebuilt with its indexes), and each build keeps the inventory of what its CLIs
-- printed (event kinds, fields and their JSON types, the flags their --help lists).
CREATE TABLE compat_results_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    build_id         TEXT NOT NULL REFERENCES runner_builds(id),
    run_id           TEXT NOT NULL,
    suite            TEXT NOT NULL,
    repo             TEXT NOT NULL,
    case_id          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pass', 'fail', 'drift', 'flaky', 'timed_out', 'infra_error')),
    attempts         INTEGER NOT NULL,
    duration_ms      BIGINT NOT NULL,
    session_start_ms BIGINT,
    metrics          TEXT NOT NULL,
    report_path      TEXT NOT NULL,
    recorded_at      TEXT NOT NULL,
    provider         TEXT NOT NULL DEFAULT '',
    UNIQUE (run_id, case_id)
);
INSERT INTO compat_results_new (id, build_id, run_id, suite, repo, case_id, status, attempts, duration_ms, session_start_ms, metrics, report_path, recorded_at, provider)
    SELECT id, build_id, run_id, suite, repo, case_id, status, attempts, duration_ms, session_start_ms, metrics, report_path, recorded_at, provider FROM compat_results;
DROP TABLE compat_results;
ALTER TABLE compat_results_new RENAME TO compat_results;
CREATE INDEX compat_results_cell ON compat_results (build_id, suite, repo, recorded_at);
CREATE INDEX compat_results_provider_cell ON compat_results (build_id, suite, repo, provider, id);

CREATE TABLE build_inventories (
    build_id     TEXT NOT NULL REFERENCES runner_builds(id),
    provider     TEXT NOT NULL,
    cli_version  TEXT NOT NULL,
    inventory    TEXT NOT NULL,      -- JSON: runner::inventory::Inventory, merged over runs
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (build_id, provider)
);
