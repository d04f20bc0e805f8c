-- Rings: a rollout's ordered org groups (JSON [{name, orgs}], as its channel's policy listed them
-- when it started; orgs in none are the last ring), and the ring it is in. Each ring completes
-- the steps before the next starts. Rollouts started before rings are one ring of every org.
ALTER TABLE rollouts ADD COLUMN ring BIGINT NOT NULL DEFAULT 0;
ALTER TABLE rollouts ADD COLUMN rings TEXT NOT NULL DEFAULT '[]';
