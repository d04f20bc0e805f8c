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
--sqlite:CREATE TABLE telemetry_sessions_by_runner (
--sqlite:    session          TEXT NOT NULL,
--sqlite:    runner           TEXT NOT NULL,
--sqlite:    org              TEXT NOT NULL,
--sqlite:    build_id         TEXT NOT NULL REFERENCES runner_builds(id),
--sqlite:    started_at       TEXT NOT NULL,
--sqlite:    received_at      TEXT NOT NULL,
--sqlite:    start_latency_ms BIGINT,
--sqlite:    outcome          TEXT NOT NULL CHECK (outcome IN ('ok', 'failed', 'disconnected', 'timed_out')),
--sqlite:    commands         BIGINT NOT NULL,
--sqlite:    commands_failed  BIGINT NOT NULL,
--sqlite:    approvals        BIGINT NOT NULL,
--sqlite:    approval_wait_ms BIGINT NOT NULL,
--sqlite:    tokens           BIGINT NOT NULL,
--sqlite:    cost_micros      BIGINT NOT NULL,
--sqlite:    duration_ms      BIGINT NOT NULL,
--sqlite:    PRIMARY KEY (runner, session)
--sqlite:);
--sqlite:INSERT INTO telemetry_sessions_by_runner SELECT session, runner, org, build_id, started_at, received_at, start_latency_ms,
--sqlite:    outcome, commands, commands_failed, approvals, approval_wait_ms, tokens, cost_micros, duration_ms FROM telemetry_sessions;
--sqlite:DROP TABLE telemetry_sessions;
--sqlite:ALTER TABLE telemetry_sessions_by_runner RENAME TO telemetry_sessions;
--sqlite:CREATE INDEX telemetry_sessions_build ON telemetry_sessions (build_id, received_at);
--postgres:ALTER TABLE telemetry_sessions DROP CONSTRAINT telemetry_sessions_pkey;
--postgres:ALTER TABLE telemetry_sessions ADD PRIMARY KEY (runner, session);
