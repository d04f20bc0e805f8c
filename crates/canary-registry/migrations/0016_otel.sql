-- The CLIs' own OpenTelemetry events (`POST /otlp/v1/logs`), by the runner's session they name.
-- Each record taken is remembered by its digest, so a record an exporter or a collector sends
-- twice counts once; what the records add is summed per session. Both go with the session's
-- assignment, after a week.
CREATE TABLE otel_records (
    runner      TEXT NOT NULL,
    session     TEXT NOT NULL,
    digest      TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (runner, session, digest)
);

CREATE TABLE otel_sessions (
    runner          TEXT NOT NULL,
    session         TEXT NOT NULL,
    service         TEXT NOT NULL,
    first_at        TEXT NOT NULL,
    last_at         TEXT NOT NULL,
    records         BIGINT NOT NULL,
    api_requests    BIGINT NOT NULL,
    api_errors      BIGINT NOT NULL,
    commands        BIGINT NOT NULL,
    commands_failed BIGINT NOT NULL,
    decisions       BIGINT NOT NULL,
    approvals       BIGINT NOT NULL,
    rejections      BIGINT NOT NULL,
    tokens          BIGINT NOT NULL,
    cost_micros     BIGINT NOT NULL,
    PRIMARY KEY (runner, session)
);
