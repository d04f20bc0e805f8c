-- Upstream versions newer than the known-good that the candidate policy skipped, with the reason
-- (yanked, not SemVer, an old pre-release, excluded, ...), as the last watch saw them.
CREATE TABLE skipped_versions (
    provider        TEXT NOT NULL,
    package_version TEXT NOT NULL,
    version         TEXT NOT NULL,
    source          TEXT NOT NULL,
    released_at     TEXT,
    reason          TEXT NOT NULL,
    seen_at         TEXT NOT NULL,
    PRIMARY KEY (provider, package_version)
);
