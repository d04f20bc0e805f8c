--sqlite:-- Upstream watching (issue: watch / pipeline). SQLite dialect; migrations/postgres/ has the same.
--postgres:-- Upstream watching (issue: watch / pipeline). PostgreSQL dialect; migrations/sqlite/ has the same.

-- Which package release carries a runtime version (Claude Code ships inside claude-agent-sdk).
ALTER TABLE runtime_versions ADD COLUMN package TEXT;
ALTER TABLE runtime_versions ADD COLUMN package_version TEXT;

-- The pipeline's verdict per candidate, so a version judged once is not run again unless asked.
CREATE TABLE candidate_verdicts (
    provider        TEXT NOT NULL,
    package_version TEXT NOT NULL,
    version         TEXT NOT NULL,
    build_id        TEXT,
    status          TEXT NOT NULL CHECK (status IN ('green', 'yellow', 'red', 'error')),
    channel         TEXT,               -- where it was promoted, if anywhere
    summary         TEXT NOT NULL,      -- JSON: the notification payload
    decided_at      TEXT NOT NULL,
    PRIMARY KEY (provider, package_version)
);

-- What deployed runners last reported (HEARTBEAT payloads).
CREATE TABLE runner_heartbeats (
    runner_id   TEXT PRIMARY KEY,
    org         TEXT,
    channel     TEXT,
    versions    TEXT NOT NULL,          -- JSON object: component -> version
    capabilities TEXT NOT NULL,         -- JSON array
    sent_at     TEXT NOT NULL,
    received_at TEXT NOT NULL
);
