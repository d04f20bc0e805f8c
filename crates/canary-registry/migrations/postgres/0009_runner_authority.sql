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
ALTER TABLE telemetry_sessions DROP CONSTRAINT telemetry_sessions_pkey;
ALTER TABLE telemetry_sessions ADD PRIMARY KEY (runner, session);
