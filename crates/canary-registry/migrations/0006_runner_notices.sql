-- Customer-hosted runners found behind the build their channel or org pin offers: one row per
-- runner and offered build, so an admin is told once; cleared when the runner catches up.
CREATE TABLE runner_notices (
    runner_id   TEXT NOT NULL,
    build_id    TEXT NOT NULL,
    org         TEXT,
    channel     TEXT NOT NULL,
    status      TEXT NOT NULL,
    changes     TEXT NOT NULL,
    noticed_at  TEXT NOT NULL,
    delivery    TEXT,
    cleared_at  TEXT,
    PRIMARY KEY (runner_id, build_id)
);
