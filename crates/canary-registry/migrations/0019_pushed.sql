-- Where a runner build was published (`canary images push`): `host/repository@sha256:…`, the
-- reference channels, pins, rollouts, assignments and update offers carry, and every engine
-- pulls the build by. NULL: the build exists only in the engines that built it.
ALTER TABLE runner_builds ADD COLUMN pushed_ref TEXT;
