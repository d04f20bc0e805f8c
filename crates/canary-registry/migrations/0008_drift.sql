--sqlite:-- Drift: `drift` joins the result statuses (SQLite cannot change a CHECK in place, so the
--sqlite:-- table is rebuilt with its indexes), and each build keeps the inventory of what its CLIs
--sqlite:-- printed (event kinds, fields and their JSON types, the flags their --help lists).
--sqlite:CREATE TABLE compat_results_new (
--sqlite:    id               INTEGER PRIMARY KEY AUTOINCREMENT,
--sqlite:    build_id         TEXT NOT NULL REFERENCES runner_builds(id),
--sqlite:    run_id           TEXT NOT NULL,
--sqlite:    suite            TEXT NOT NULL,
--sqlite:    repo             TEXT NOT NULL,
--sqlite:    case_id          TEXT NOT NULL,
--sqlite:    status           TEXT NOT NULL CHECK (status IN ('pass', 'fail', 'drift', 'flaky', 'timed_out', 'infra_error')),
--sqlite:    attempts         INTEGER NOT NULL,
--sqlite:    duration_ms      BIGINT NOT NULL,
--sqlite:    session_start_ms BIGINT,
--sqlite:    metrics          TEXT NOT NULL,
--sqlite:    report_path      TEXT NOT NULL,
--sqlite:    recorded_at      TEXT NOT NULL,
--sqlite:    provider         TEXT NOT NULL DEFAULT '',
--sqlite:    UNIQUE (run_id, case_id)
--sqlite:);
--sqlite:INSERT INTO compat_results_new (id, build_id, run_id, suite, repo, case_id, status, attempts, duration_ms, session_start_ms, metrics, report_path, recorded_at, provider)
--sqlite:    SELECT id, build_id, run_id, suite, repo, case_id, status, attempts, duration_ms, session_start_ms, metrics, report_path, recorded_at, provider FROM compat_results;
--sqlite:DROP TABLE compat_results;
--sqlite:ALTER TABLE compat_results_new RENAME TO compat_results;
--sqlite:CREATE INDEX compat_results_cell ON compat_results (build_id, suite, repo, recorded_at);
--sqlite:CREATE INDEX compat_results_provider_cell ON compat_results (build_id, suite, repo, provider, id);
--postgres:-- Drift: `drift` joins the result statuses, and each build keeps the inventory of what its
--postgres:-- CLIs printed (event kinds, fields and their JSON types, the flags their --help lists).
--postgres:ALTER TABLE compat_results DROP CONSTRAINT compat_results_status_check;
--postgres:ALTER TABLE compat_results ADD CONSTRAINT compat_results_status_check
--postgres:    CHECK (status IN ('pass', 'fail', 'drift', 'flaky', 'timed_out', 'infra_error'));

CREATE TABLE build_inventories (
    build_id     TEXT NOT NULL REFERENCES runner_builds(id),
    provider     TEXT NOT NULL,
    cli_version  TEXT NOT NULL,
--sqlite:    inventory    TEXT NOT NULL,      -- JSON: runner::inventory::Inventory, merged over runs
--postgres:    inventory    TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (build_id, provider)
);
