-- What a rollout's cohorts are drawn by: `session`, `conversation` (the default: a session that
-- names its conversation is placed by it, so every turn of a conversation is in the same cohort)
-- or `org`. Rollouts started before this are drawn by conversation too, which, for a session that
-- names none, is its session, as before.
ALTER TABLE rollouts ADD COLUMN cohort_key TEXT NOT NULL DEFAULT 'conversation';

-- The build each conversation was given while a rollout ran: a conversation resumed at a later
-- step keeps it, while the rollout is active (an abort sends every session back to the baseline).
CREATE TABLE conversation_builds (
    rollout_id   BIGINT NOT NULL,
    org          TEXT NOT NULL,
    conversation TEXT NOT NULL,
    build_id     TEXT NOT NULL,
    assigned_at  TEXT NOT NULL,
    PRIMARY KEY (rollout_id, org, conversation)
);
