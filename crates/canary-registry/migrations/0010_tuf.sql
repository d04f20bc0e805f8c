-- The Update Framework metadata the control plane publishes for customer-hosted runners: every
-- root version, the signed targets/snapshot/timestamp files, the offer documents they list, and
-- the publisher's own state (`_state.json`, never served). One row per served path.
CREATE TABLE tuf_files (
    path       TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
