-- Sums of squares of each session's cost (micros), tokens and approvals, per build and second: the
-- variances the rollout guardrails on per-session means (cost, tokens, approval gates) need.
-- Rows written before this hold 0, less than their sums allow: a window reaching back to them
-- reads its spread as unknown, and the guardrail as inconclusive.
ALTER TABLE telemetry_rollups ADD COLUMN cost_sq REAL NOT NULL DEFAULT 0;
ALTER TABLE telemetry_rollups ADD COLUMN tokens_sq REAL NOT NULL DEFAULT 0;
ALTER TABLE telemetry_rollups ADD COLUMN approvals_sq REAL NOT NULL DEFAULT 0;
