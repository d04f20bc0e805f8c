-- Alerts about rollout transitions, delivered to the channel's webhook by `canary serve`: an
-- outbox, so a control plane killed with kill -9 neither loses an alert nor sends a delivered
-- one again (at most the one in flight at the kill).
CREATE TABLE rollout_alerts (
--sqlite:    id         INTEGER PRIMARY KEY AUTOINCREMENT,
--postgres:    id         BIGSERIAL PRIMARY KEY,
    event_id   BIGINT NOT NULL,     -- the rollout_events row it is about
    alert      TEXT NOT NULL,       -- started, advanced, held, sample_ratio, aborted, completed
    url        TEXT NOT NULL,
    body       TEXT NOT NULL,       -- the JSON posted
    state      TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts   BIGINT NOT NULL,
    next_at    TEXT NOT NULL,
    last_error TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (event_id, alert)
);
CREATE INDEX rollout_alerts_due ON rollout_alerts (state, next_at);

-- The last rollout event the alert scan has looked at.
CREATE TABLE alert_cursor (
    id         BIGINT PRIMARY KEY,
    last_event BIGINT NOT NULL
);
