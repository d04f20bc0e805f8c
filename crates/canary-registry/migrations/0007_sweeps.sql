-- Post-update repo sweeps: the repos orgs opted in, and the durable job queue a promotion to
-- stable fills (one job per repo and build), claimed by workers with a lease.
CREATE TABLE sweep_repos (
    id          TEXT PRIMARY KEY,
    org         TEXT NOT NULL,
    url         TEXT NOT NULL,
    branch      TEXT NOT NULL,
    api_url     TEXT NOT NULL,
    token_env   TEXT,
    commands    TEXT NOT NULL,
    added_at    TEXT NOT NULL
);

CREATE TABLE sweep_jobs (
--sqlite:    id          INTEGER PRIMARY KEY AUTOINCREMENT,
--postgres:    id          BIGSERIAL PRIMARY KEY,
    repo_id     TEXT NOT NULL,
    org         TEXT NOT NULL,
    build_id    TEXT NOT NULL,
    state       TEXT NOT NULL,
    outcome     TEXT,
    reason      TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    worker      TEXT,
    lease_until TEXT,
    next_at     TEXT NOT NULL,
    detail      TEXT,
    pr_number   BIGINT,
    pr_url      TEXT,
    pr_state    TEXT,
    created_at  TEXT NOT NULL,
    started_at  TEXT,
    finished_at TEXT,
    UNIQUE (repo_id, build_id)
);
CREATE INDEX sweep_jobs_state ON sweep_jobs (state, next_at);
