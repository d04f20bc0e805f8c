-- Runner builds bundle the runner and every CLI: a result names the CLI of the build it judged
-- ('' for suites that judge the build as a whole), and a build keeps its manifest (components,
-- versions, digests) as JSON, NULL for images without one.
ALTER TABLE compat_results ADD COLUMN provider TEXT NOT NULL DEFAULT '';
ALTER TABLE runner_builds ADD COLUMN manifest TEXT;
CREATE INDEX compat_results_provider_cell ON compat_results (build_id, suite, repo, provider, id);
