-- Runner authority and operator tokens.

-- A token speaks either for one runner (bound to the orgs in `orgs`, a JSON array; NULL for a
-- token issued before tokens had orgs: bound to none, so it is refused until reissued) or for
-- an operator with a role.
ALTER TABLE runner_tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'runner' CHECK (kind IN ('runner', 'operator'));
ALTER TABLE runner_tokens ADD COLUMN orgs TEXT;
ALTER TABLE runner_tokens ADD COLUMN role TEXT CHECK (role IS NULL OR role IN ('viewer', 'operator', 'admin'));

-- Every session the control plane assigned: telemetry is taken only for these, from the runner
-- they were assigned to, for the org and build of the assignment.
CREATE TABLE session_assignments (
    runner      TEXT NOT NULL,
    session     TEXT NOT NULL,
    org         TEXT NOT NULL,
    build_id    TEXT NOT NULL,
    assigned_at TEXT NOT NULL,
    PRIMARY KEY (runner, session)
);
CREATE INDEX session_assignments_at ON session_assignments (assigned_at);

-- Session ids are the runner's own: one runner cannot claim another's ids.
CREATE TABLE telemetry_sessions_by_runner (
    session          TEXT NOT NULL,
    runner           TEXT NOT NULL,
    org              TEXT NOT NULL,
    build_id         TEXT NOT NULL REFERENCES runner_builds(id),
    started_at       TEXT NOT NULL,
    received_at      TEXT NOT NULL,
    start_latency_ms BIGINT,
    outcome          TEXT NOT NULL CHECK (outcome IN ('ok', 'failed', 'disconnected', 'timed_out')),
    commands         BIGINT NOT NULL,
    commands_failed  BIGINT NOT NULL,
    approvals        BIGINT NOT NULL,
    approval_wait_ms BIGINT NOT NULL,
    tokens           BIGINT NOT NULL,
    cost_micros      BIGINT NOT NULL,
    duration_ms      BIGINT NOT NULL,
    PRIMARY KEY (runner, session)
);
INSERT INTO telemetry_sessions_by_runner SELECT session, runner, org, build_id, started_at, received_at, start_latency_ms,
    outcome, commands, commands_failed, approvals, approval_wait_ms, tokens, cost_micros, duration_ms FROM telemetry_sessions;
DROP TABLE telemetry_sessions;
ALTER TABLE telemetry_sessions_by_runner RENAME TO telemetry_sessions;
CREATE INDEX telemetry_sessions_build ON telemetry_sessions (build_id, received_at);
