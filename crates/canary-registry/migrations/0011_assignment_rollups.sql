-- Per build and second of assignment: sessions assigned, and how many of those were reported in
-- telemetry. The rollout controller's sample-ratio guard compares the candidate's share of the
-- reported sessions with its share of the assigned ones over the same window.
CREATE TABLE assignment_rollups (
    build_id TEXT NOT NULL,
    second   TEXT NOT NULL,     -- YYYY-MM-DDTHH:MM:SS of the assignment
    assigned BIGINT NOT NULL,
    reported BIGINT NOT NULL,
    PRIMARY KEY (build_id, second)
);
