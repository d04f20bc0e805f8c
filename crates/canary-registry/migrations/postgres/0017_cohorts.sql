-- Candidate and baseline drawn from the same orgs: each assignment a rollout judges (a session
-- of the ring it is in, on either side; not pinned, frozen or of another ring) carries the
-- rollout's cohort label, `<rollout id>:<ring>`, and the rollups are kept per cohort as well as
-- per build and second. A decision reads both sides under its rollout's label; the KPIs and the
-- dashboard sum every cohort. Sessions rolled up before this carry `''`: a rollout running
-- across the upgrade judges its current step on what arrives after it.
ALTER TABLE session_assignments ADD COLUMN cohort TEXT NOT NULL DEFAULT '';

ALTER TABLE telemetry_rollups ADD COLUMN cohort TEXT NOT NULL DEFAULT '';
ALTER TABLE telemetry_rollups DROP CONSTRAINT telemetry_rollups_pkey;
ALTER TABLE telemetry_rollups ADD PRIMARY KEY (build_id, cohort, second);

ALTER TABLE telemetry_histograms ADD COLUMN cohort TEXT NOT NULL DEFAULT '';
ALTER TABLE telemetry_histograms DROP CONSTRAINT telemetry_histograms_pkey;
ALTER TABLE telemetry_histograms ADD PRIMARY KEY (build_id, cohort, minute, metric, bucket);

ALTER TABLE assignment_rollups ADD COLUMN cohort TEXT NOT NULL DEFAULT '';
ALTER TABLE assignment_rollups DROP CONSTRAINT assignment_rollups_pkey;
ALTER TABLE assignment_rollups ADD PRIMARY KEY (build_id, cohort, second);
