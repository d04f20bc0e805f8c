-- Leases: which `canary serve` replica runs the work only one may do at a time (the rollout
-- controller and train, alert deliveries, update publication, pruning). A replica holds a lease
-- until `expires_at` and renews it every pass; another takes it over once it has expired.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    acquired_at TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
