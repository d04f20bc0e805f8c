-- Drift: `drift` joins the result statuses, and each build keeps the inventory of what its
-- CLIs printed (event kinds, fields and their JSON types, the flags their --help lists).
ALTER TABLE compat_results DROP CONSTRAINT compat_results_status_check;
ALTER TABLE compat_results ADD CONSTRAINT compat_results_status_check
    CHECK (status IN ('pass', 'fail', 'drift', 'flaky', 'timed_out', 'infra_error'));

CREATE TABLE build_inventories (
    build_id     TEXT NOT NULL REFERENCES runner_builds(id),
    provider     TEXT NOT NULL,
    cli_version  TEXT NOT NULL,
    inventory    TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (build_id, provider)
);
