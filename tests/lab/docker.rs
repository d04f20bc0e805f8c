//! Against the real Docker engine: containers started, steps run and killed, cleanup after
//! success, failure, interrupt and `kill -9`.

use crate::helpers::{Canary, lab_objects, read_json, require_lab};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// JUnit structure CI systems rely on: counts that add up, named cases, failure messages.
fn assert_valid_junit(xml: &str) -> roxmltree::Document<'_> {
    let doc = roxmltree::Document::parse(xml).expect("junit.xml is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let num = |n: roxmltree::Node, a: &str| {
        n.attribute(a)
            .unwrap_or_else(|| panic!("<{}> lacks {a}", n.tag_name().name()))
            .parse::<usize>()
            .expect("integer attribute")
    };
    let mut total = 0;
    for suite in root.children().filter(|n| n.is_element()) {
        assert_eq!(suite.tag_name().name(), "testsuite");
        assert!(suite.attribute("name").is_some_and(|n| !n.is_empty()));
        let cases: Vec<_> = suite.children().filter(|n| n.has_tag_name("testcase")).collect();
        assert_eq!(
            num(suite, "tests"),
            cases.len(),
            "testsuite tests= matches its testcases"
        );
        let failures = cases
            .iter()
            .filter(|c| c.children().any(|x| x.has_tag_name("failure")))
            .count();
        assert_eq!(num(suite, "failures"), failures);
        for c in &cases {
            assert!(c.attribute("name").is_some() && c.attribute("classname").is_some());
            for f in c
                .children()
                .filter(|x| x.has_tag_name("failure") || x.has_tag_name("error"))
            {
                assert!(
                    f.attribute("message").is_some_and(|m| !m.is_empty()),
                    "failures carry a message"
                );
            }
        }
        total += cases.len();
    }
    assert_eq!(num(root, "tests"), total);
    doc
}

#[test]
fn demo_suite_passes_on_all_three_repos() {
    require_lab();
    let out = Canary::new()
        .args(["run", "-s", "suites/demo.yaml", "--jobs", "3", "--json"])
        .run()
        .code(0);
    let report = out.json();
    assert_eq!(report["summary"]["total"], 3);
    assert_eq!(report["summary"]["passed"], 3);
    assert!(report["image"]["id"].as_str().unwrap().starts_with("sha256:"));
    let run_dir = out.run_dir();
    assert_eq!(
        read_json(&run_dir.join("run.json")),
        report,
        "the JSON on stdout is the report on disk"
    );
    let xml = std::fs::read_to_string(run_dir.join("junit.xml")).unwrap();
    let doc = assert_valid_junit(&xml);
    assert_eq!(
        doc.root_element()
            .children()
            .filter(|n| n.has_tag_name("testsuite"))
            .count(),
        3,
        "one testsuite per suite × repo"
    );
    for repo in ["js-ts", "python", "ci-enabled"] {
        let case = run_dir.join(format!("cases/demo--{repo}"));
        let patch = std::fs::read_to_string(case.join("diff.patch")).unwrap();
        assert!(
            patch.contains("+canary was here"),
            "{repo}: the final diff is an artifact"
        );
        let repro = std::fs::read_to_string(case.join("repro.sh")).unwrap();
        assert!(repro.contains(&format!("repro {}/demo--{repo}", report["run_id"].as_str().unwrap())));
    }
    let ci_out =
        std::fs::read_to_string(run_dir.join("cases/demo--ci-enabled/steps/04-ci-entrypoint-passes.stdout")).unwrap();
    assert!(
        ci_out.contains("lint ok") && ci_out.contains("== ci passed"),
        "the CI entrypoint ran: {ci_out}"
    );
    assert_eq!(
        lab_objects(&format!("canary-lab.run={}", report["run_id"].as_str().unwrap())),
        (0, 0),
        "a finished run leaves nothing behind"
    );
}

#[test]
fn a_failing_expectation_exits_1_and_says_expected_vs_actual() {
    require_lab();
    let out = Canary::new()
        .args(["run", "-s", "tests/fixtures/suites/failing.yaml"])
        .run()
        .code(1);
    assert!(out.stdout().contains("failing--js-ts  failed"), "{}", out.stdout());
    assert!(
        out.stdout().contains("To reproduce:"),
        "the summary says how to reproduce"
    );
    let xml = std::fs::read_to_string(out.run_dir().join("junit.xml")).unwrap();
    let doc = assert_valid_junit(&xml);
    let failure = doc
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .expect("a <failure>");
    let message = failure.attribute("message").unwrap();
    assert!(
        message.starts_with(r#"stdout.contains: expected "GREETING = \"Howdy\"", got"#),
        "{message}"
    );
    assert!(
        message.contains(r#"GREETING = \"Hello\""#),
        "the actual output is quoted: {message}"
    );
    let passed = doc
        .descendants()
        .find(|n| n.attribute("name") == Some("tests still pass"))
        .unwrap();
    assert!(
        !passed.children().any(|c| c.is_element()),
        "later steps still run and pass"
    );
}

#[test]
fn a_step_past_its_deadline_is_killed_and_the_case_timed_out() {
    require_lab();
    let started = Instant::now();
    let out = Canary::new()
        .args(["run", "-s", "tests/fixtures/suites/timeout.yaml", "--json"])
        .run()
        .code(1);
    let report = out.json();
    let case = &report["cases"][0];
    assert_eq!(case["status"], "timed_out");
    let step = &case["steps"][0];
    assert_eq!(step["status"], "timed_out");
    let latency = step["kill_latency_ms"].as_u64().unwrap();
    assert!(latency < 1000, "killed {latency} ms after the deadline");
    assert!(
        step["duration_ms"].as_u64().unwrap() < 3000,
        "the 300 s sleep did not run on"
    );
    assert_eq!(case["steps"][1]["status"], "skipped");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the run did not wait for the step's children"
    );
    assert_eq!(
        lab_objects(&format!("canary-lab.run={}", report["run_id"].as_str().unwrap())),
        (0, 0)
    );
}

/// Starts `canary run` of the slow suite and waits until its containers exist.
fn start_slow_run() -> (std::process::Child, tempfile::TempDir, String) {
    start_slow_run_on(None)
}

/// `cmd` run as if on a machine named `host` (its own UTS namespace: what the lab reads as the
/// hostname, and labels its objects with). Other labs on this machine take such a run's objects
/// for another machine's and never gc them; only a gc on the same "host" may.
fn on_host(cmd: &std::process::Command, host: &str) -> std::process::Command {
    let mut c = std::process::Command::new("unshare");
    c.args([
        "--uts",
        "sh",
        "-c",
        "hostname \"$1\" && shift && exec \"$@\"",
        "sh",
        host,
    ])
    .arg(cmd.get_program())
    .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        c.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

fn start_slow_run_on(host: Option<&str>) -> (std::process::Child, tempfile::TempDir, String) {
    let (cmd, reports) = Canary::new()
        .args(["run", "-s", "tests/fixtures/suites/slow.yaml", "--jobs", "2"])
        .command();
    let mut cmd = match host {
        Some(h) => on_host(&cmd, h),
        None => cmd,
    };
    // `unshare` and `sh` exec into canary: the child's pid is the run's.
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let label = format!("canary-lab.pid={}", child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    while lab_objects(&label).0 < 2 {
        assert!(Instant::now() < deadline, "the run never started its containers");
        std::thread::sleep(Duration::from_millis(200));
    }
    (child, reports, label)
}

/// The names of the lab objects carrying `label`.
fn lab_object_names(label: &str) -> (Vec<String>, Vec<String>) {
    let names = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = crate::helpers::docker(args).lines().map(str::to_string).collect();
        v.sort();
        v
    };
    let filter = format!("label={label}");
    (
        names(&["ps", "-a", "--format", "{{.Names}}", "--filter", &filter]),
        names(&["network", "ls", "--format", "{{.Name}}", "--filter", &filter]),
    )
}

/// A run killed with -9 leaves its containers and network; `canary gc` removes exactly them.
/// The run is labelled as another machine's for every other lab on this one, so no concurrent
/// run's own orphan gc can take its objects first: what is removed is what this gc removed.
#[test]
fn after_kill_9_the_run_is_left_and_gc_removes_exactly_it() {
    require_lab();
    let host = format!("kill9-{}", std::process::id());
    let (mut child, _reports, label) = start_slow_run_on(Some(&host));
    let (containers, networks) = lab_object_names(&label);
    assert_eq!(
        (containers.len(), networks.len()),
        (2, 1),
        "two case containers and the lab network are up"
    );
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        lab_object_names(&label),
        (containers.clone(), networks.clone()),
        "kill -9 gives the run no chance to clean up, and no other lab takes its objects"
    );
    let (cmd, _r) = Canary::new().args(["gc", "--json"]).command();
    let out = on_host(&cmd, &host).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = |key: &str| -> Vec<String> {
        said[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    };
    for c in &containers {
        assert!(listed("containers").contains(c), "gc --json names {c}: {said}");
    }
    for n in &networks {
        assert!(listed("networks").contains(n), "gc --json names {n}: {said}");
    }
    assert_eq!(
        lab_objects(&label),
        (0, 0),
        "gc removed the crashed run's containers and network"
    );
}

/// A container someone else started from a lab-built image carries the image's lab labels (a
/// run, a dead pid, this host) but not the lab's ownership: `canary gc` leaves it running.
#[test]
fn gc_leaves_a_container_it_did_not_create() {
    require_lab();
    let foreign = format!("canary-foreign-{}", std::process::id());
    let image = canary::images::base_reference(&canary::config::LabConfig::load(None).unwrap().lab());
    let host = canary::engine::hostname();
    crate::helpers::docker(&[
        "run",
        "-d",
        "--name",
        &foreign,
        "--label",
        "canary-lab.run=someone-elses",
        "--label",
        "canary-lab.pid=4194305",
        "--label",
        &format!("canary-lab.host={host}"),
        &image,
        "sleep",
        "300",
    ]);
    let out = Canary::new().args(["gc", "--json"]).run().code(0);
    let running = crate::helpers::docker(&["inspect", "-f", "{{.State.Running}}", &foreign]);
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &foreign])
        .output();
    assert!(
        !out.json()["containers"].to_string().contains(&foreign),
        "gc does not list it: {}",
        out.json()
    );
    assert_eq!(running.trim(), "true", "gc left alone a container it did not create");
}

#[test]
fn ctrl_c_and_sigterm_clean_up_before_exit() {
    require_lab();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let (mut child, _reports, label) = start_slow_run();
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(2), "an interrupted run exits 2");
        assert_eq!(
            lab_objects(&label),
            (0, 0),
            "signal {signal}: the run removed its own objects"
        );
    }
}

#[test]
fn repro_reruns_a_case_with_the_same_inputs_and_keep_leaves_it_running() {
    require_lab();
    // A suite of two repos, recorded on PostgreSQL as a shared lab records it: the run keeps a
    // copy of the suite and of each repo it ran, and its repro needs nothing from the registry.
    let pg = crate::registry::fresh(crate::registry::Backend::Postgres);
    let first = Canary::new()
        .args(["--registry", &pg.url])
        .args(["run", "-s", "tests/fixtures/suites/failing-many.yaml", "--json"])
        .run()
        .code(1);
    let original = first.json();
    let run_id = original["run_id"].as_str().unwrap().to_string();
    let reports = first.reports;
    // The line the report prints for a person is the command that works.
    let printed = original["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "failing-many--js-ts")
        .unwrap()["repro"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        printed.contains(&format!("repro {run_id}/failing-many--js-ts")),
        "{printed}"
    );
    // A subset run (--repo python) of the same suite reproduces too.
    let subset = Canary::new()
        .args([
            "run",
            "-s",
            "tests/fixtures/suites/failing-many.yaml",
            "--repo",
            "python",
            "--json",
        ])
        .run()
        .code(1);
    let subset_run = subset.json()["run_id"].as_str().unwrap().to_string();
    let python = std::process::Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(crate::helpers::root())
        .arg("--reports-dir")
        .arg(subset.reports.path())
        .args(["repro", &format!("{subset_run}/failing-many--python"), "--json"])
        .env("CI", "true")
        .output()
        .unwrap();
    assert_eq!(
        python.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&python.stderr)
    );
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(crate::helpers::root())
        .arg("--reports-dir")
        .arg(reports.path())
        .args(["repro", &format!("{run_id}/failing-many--js-ts"), "--keep", "--json"])
        .env("CI", "true")
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let rerun: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(rerun["image"]["id"], original["image"]["id"], "same image digest");
    let js = |r: &serde_json::Value| {
        r["repos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == "js-ts")
            .cloned()
            .unwrap()
    };
    assert_eq!(js(&rerun), js(&original), "same repo digest and commands");
    assert_eq!(
        rerun["suites"][0]["digest"], original["suites"][0]["digest"],
        "same suite content"
    );
    assert_eq!(
        rerun["cases"][0]["steps"][0]["failures"],
        original["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "failing-many--js-ts")
            .unwrap()["steps"][0]["failures"],
        "same verdict"
    );
    let stderr = String::from_utf8_lossy(&again.stderr);
    let name = format!("canary-{}-failing-many--js-ts", rerun["run_id"].as_str().unwrap());
    assert!(
        stderr.contains(&format!("docker exec -it -w /work {name} bash")),
        "{stderr}"
    );

    // The printed line opens the kept container in the case's workspace: run as printed but
    // for its interactive shell (no terminal here), which a command in that workspace replaces.
    let line = stderr
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("docker exec -it "))
        .unwrap()
        .to_string();
    let command = format!(
        "docker exec {} git log --format=%s",
        line.trim_start_matches("docker exec -it ").trim_end_matches(" bash")
    );
    let inside = std::process::Command::new("sh")
        .args(["-c", &command])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&inside.stdout).trim(),
        "pinned",
        "`{line}` opens the kept container in the case's workspace ({})",
        String::from_utf8_lossy(&inside.stderr)
    );
    Canary::new().args(["gc"]).run().code(0);
    assert_eq!(
        lab_objects(&format!("canary-lab.run={}", rerun["run_id"].as_str().unwrap())).0,
        1,
        "plain gc spares kept containers"
    );
    let _ = std::process::Command::new("docker").args(["rm", "-f", &name]).output();
}

#[test]
fn partitions_split_the_matrix_without_overlap() {
    require_lab();
    let mut seen = Vec::new();
    for p in ["1/2", "2/2"] {
        let out = Canary::new()
            .args([
                "run",
                "-s",
                "suites/demo.yaml",
                "--partition",
                p,
                "--jobs",
                "2",
                "--json",
            ])
            .run()
            .code(0);
        let report = out.json();
        assert_eq!(report["partition"], p);
        // A case of a partition reproduces with its printed line.
        let line = report["cases"][0]["repro"].as_str().unwrap();
        let again = crate::helpers::run_as_printed(line, &[]);
        assert_eq!(
            again.status.code(),
            Some(0),
            "`{line}` passes again: {}",
            String::from_utf8_lossy(&again.stderr)
        );
        seen.extend(
            report["cases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string()),
        );
    }
    seen.sort();
    assert_eq!(seen, vec!["demo--ci-enabled", "demo--js-ts", "demo--python"]);
}

#[test]
fn a_missing_image_exits_2_before_anything_runs() {
    require_lab();
    let out = Canary::new()
        .args([
            "run",
            "-s",
            "suites/demo.yaml",
            "--image",
            "canary-lab/does-not-exist:0",
        ])
        .run()
        .code(2);
    assert!(
        out.stderr()
            .contains("image `canary-lab/does-not-exist:0` is not present"),
        "{}",
        out.stderr()
    );
    assert_eq!(out.report_dirs(), 0, "no run folder for a run that never started");
}

/// The engine-exec path, used for images the executor cannot run in, keeps the same promises.
#[test]
fn without_the_executor_steps_run_through_docker_exec() {
    require_lab();
    let out = Canary::new()
        .env("CANARY_EXECUTOR", "off")
        .args(["run", "-s", "suites/demo.yaml", "--repo", "python", "--json"])
        .run()
        .code(0);
    assert!(
        out.stderr().contains("CANARY_EXECUTOR=off: steps use docker exec"),
        "{}",
        out.stderr()
    );
    assert_eq!(out.json()["summary"]["passed"], 1);
    let out = Canary::new()
        .env("CANARY_EXECUTOR", "off")
        .args(["run", "-s", "tests/fixtures/suites/timeout.yaml", "--json"])
        .run()
        .code(1);
    let step = &out.json()["cases"][0]["steps"][0];
    assert_eq!(step["status"], "timed_out");
    assert!(step["kill_latency_ms"].as_u64().unwrap() < 1000, "{step}");
}

#[test]
fn the_case_deadline_kills_a_step_within_its_own_timeout() {
    require_lab();
    let out = Canary::new()
        .args(["run", "-s", "tests/fixtures/suites/case-timeout.yaml", "--json"])
        .run()
        .code(1);
    let case = &out.json()["cases"][0];
    assert_eq!(case["status"], "timed_out");
    let step = &case["steps"][0];
    assert_eq!(
        step["failures"][0]["expected"],
        "to finish within the case deadline (2s)"
    );
    assert!(step["kill_latency_ms"].as_u64().unwrap() < 1000);
    assert_eq!(case["steps"][1]["status"], "skipped");
}

#[test]
fn draft_pr_faults_name_what_the_forge_received() {
    require_lab();
    let out = Canary::new()
        .args([
            "run",
            "-s",
            "tests/fixtures/suites/draft-pr-faults.yaml",
            "--json",
            "--no-record",
        ])
        .run()
        .code(1);
    let report = out.json();
    let steps = report["cases"][0]["steps"].as_array().unwrap().clone();
    let failures = |i: usize| -> Vec<(String, String, String)> {
        steps[i]["failures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["check"].as_str().unwrap().to_string(),
                    f["expected"].as_str().unwrap().to_string(),
                    f["actual"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    // No changes: the runner says so, nothing is opened, and the failure lists what the forge got
    // (only the lab's seed push).
    let empty = failures(0);
    assert_eq!(empty.len(), 1, "{empty:?}");
    assert_eq!(empty[0].0, "pull_request.opened");
    assert!(
        empty[0].2.contains("none was opened") && empty[0].2.contains("git-receive-pack -> 200"),
        "{empty:?}"
    );
    // A real PR that is not what the suite expects: each difference is named.
    let wrong = failures(2);
    assert_eq!(
        wrong,
        vec![
            ("pull_request.draft".into(), "false".into(), "true".into()),
            (
                "pull_request.branch".into(),
                "canary/other".into(),
                "canary/touch".into()
            ),
        ],
        "diff: matches holds, the rest does not"
    );
    // The forge's records are a case artifact, limited to the case's own repository.
    let forge = std::fs::read_to_string(
        out.run_dir()
            .join("cases/draft-pr-faults--python/steps/03-wrong-expectations.forge.jsonl"),
    )
    .unwrap();
    assert!(
        forge.contains("\"draft\":true") && forge.contains("canary/touch"),
        "{forge}"
    );
    assert_eq!(
        lab_objects(&format!("canary-lab.run={}", report["run_id"].as_str().unwrap())),
        (0, 0),
        "forge and network removed"
    );
}

/// A printed line run with the registry these tests share.
fn run_as_printed_here(line: &str) -> std::process::Output {
    let registry = Path::new(env!("CARGO_TARGET_TMPDIR")).join("default-registry.db");
    crate::helpers::run_as_printed(line, &[("CANARY_REGISTRY", registry.as_os_str())])
}

/// The status column of `case`'s row in a run summary.
fn status_of(summary: &str, case: &str) -> Option<String> {
    summary.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some(case)).then(|| words.next().unwrap_or_default().to_string())
    })
}

#[test]
fn every_printed_repro_line_and_repro_script_runs_and_gives_its_case_the_same_verdict() {
    require_lab();
    // Two suites, four repros' worth of cases: the demo passes on all three repos, and a
    // two-repo suite fails on both. The summary is read as a person reads it, not as JSON.
    let first = Canary::new()
        .args([
            "run",
            "-s",
            "suites/demo.yaml",
            "-s",
            "tests/fixtures/suites/failing-many.yaml",
        ])
        .run()
        .code(1);
    let summary = first.stdout();
    let cases = first.run_dir().join("cases");
    let printed: Vec<String> = summary
        .lines()
        .skip_while(|l| l.trim() != "To reproduce:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(printed.len(), 2, "one repro line per failed case:\n{summary}");
    for line in &printed {
        let case = line.rsplit('/').next().unwrap();
        let out = run_as_printed_here(line);
        let again = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "`{line}` gives the failure again\n{again}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(status_of(&again, case).as_deref(), Some("failed"), "`{line}`:\n{again}");
    }

    // Every case folder holds a repro.sh, passed cases included; each gives its verdict again.
    let mut seen = 0;
    for entry in std::fs::read_dir(&cases).unwrap().flatten() {
        let case = entry.file_name().to_string_lossy().to_string();
        let before = status_of(&summary, &case).unwrap_or_else(|| panic!("{case} in\n{summary}"));
        let script = entry.path().join("repro.sh");
        let out = run_as_printed_here(&format!("sh {}", script.display()));
        let again = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            status_of(&again, &case).as_deref(),
            Some(before.as_str()),
            "{} gives {case} its verdict again:\n{again}\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(if before == "passed" { 0 } else { 1 }));
        seen += 1;
    }
    assert_eq!(seen, 5, "three demo cases and two failing ones");
}

#[test]
fn repro_of_a_case_whose_image_is_gone_says_so_and_runs_nothing() {
    require_lab();
    // An image of this test's own (the base image with one label more), so removing it takes
    // nothing from any other test.
    let base = Canary::new().args(["images", "base", "--json"]).run().code(0).json()["reference"]
        .as_str()
        .unwrap()
        .to_string();
    let tag = format!("canary-test/repro-gone:{}", std::process::id());
    let holder = crate::helpers::docker(&["create", &base, "true"]);
    crate::helpers::docker(&[
        "commit",
        "--change",
        &format!("LABEL canary-test.repro-gone={tag}"),
        &holder,
        &tag,
    ]);
    crate::helpers::docker(&["rm", &holder]);
    // Without the executor, whose image would stack on this one and keep it in the engine.
    let first = Canary::new()
        .env("CANARY_EXECUTOR", "off")
        .args([
            "run",
            "-s",
            "tests/fixtures/suites/failing-many.yaml",
            "--repo",
            "python",
            "--image",
            &tag,
            "--json",
        ])
        .run()
        .code(1);
    let run_id = first.json()["run_id"].as_str().unwrap().to_string();
    let image_id = first.json()["image"]["id"].as_str().unwrap().to_string();
    crate::helpers::docker(&["rmi", &tag]);

    let again = std::process::Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(crate::helpers::root())
        .arg("--reports-dir")
        .arg(first.reports.path())
        .args(["repro", &format!("{run_id}/failing-many--python")])
        .env("CI", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(2), "{stderr}");
    let short = &image_id.trim_start_matches("sha256:")[..12];
    assert!(
        stderr.contains("is no longer in the engine") && stderr.contains(short) && stderr.contains(&tag),
        "{stderr}"
    );
    assert!(stderr.contains("by its digest"), "says what to do: {stderr}");
    assert_eq!(first.report_dirs(), 1, "nothing was run");
}

/// The local engine against the backend conformance suite, as `canary engine check` runs it:
/// every check passes, each named, and the run leaves no container, network or firewall rule.
#[test]
fn the_local_engine_passes_the_backend_conformance_suite() {
    require_lab();
    let out = Canary::new().args(["engine", "check", "--json"]).run();
    let v = out.json();
    let checks = v["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "executor",
            "start",
            "limits",
            "upload",
            "large stdin",
            "large output",
            "output limit",
            "deadline",
            "no egress",
            "gc"
        ]
    );
    for c in checks {
        assert_eq!(c["passed"], true, "{c}");
    }
    out.code(0);
    let (containers, networks) = lab_object_names("canary-lab.run");
    assert!(
        !containers.iter().chain(&networks).any(|n| n.contains("conformance")),
        "left behind: {containers:?} {networks:?}"
    );
    // The lab network's firewall rule went with it.
    let detail = checks[8]["detail"].as_str().unwrap();
    let network = detail.split("refused from ").nth(1).unwrap().split(',').next().unwrap();
    let iface = canary::engine::docker::bridge_name(network);
    let rules = std::process::Command::new("iptables")
        .args(["-S", "INPUT"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        !rules.contains(&format!("-i {iface} ")),
        "the rule for {iface} outlived {network}: {rules}"
    );
}

/// A run killed midway (kill -9 after its first verdict) is resumed: only the cases without a
/// verdict run again, into the same folder and report; the killed pass's container is reaped.
#[test]
fn docker_a_killed_run_resumes_with_only_the_cases_without_a_verdict() {
    require_lab();
    let registry = tempfile::tempdir().unwrap();
    let db = registry.path().join("registry.db");
    let (cmd, reports) = Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["run", "-s", "suites/demo.yaml", "--jobs", "1"])
        .command();
    let mut child = crate::helpers::spawn_captured(cmd);
    let deadline = Instant::now() + Duration::from_secs(180);
    let run_dir = loop {
        let found = std::fs::read_dir(reports.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| std::fs::read_to_string(p.join("cases.jsonl")).is_ok_and(|t| t.lines().count() >= 1));
        if let Some(dir) = found {
            break dir;
        }
        assert!(Instant::now() < deadline, "no case finished within 3 minutes");
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    let _ = child.wait();
    let journal: Vec<serde_json::Value> = std::fs::read_to_string(run_dir.join("cases.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        !journal.is_empty() && journal.len() < 3,
        "killed after its first verdict: {journal:?}"
    );
    assert!(!run_dir.join("run.json").exists(), "the killed run wrote no report");
    let run_id = run_dir.file_name().unwrap().to_str().unwrap().to_string();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(crate::helpers::root())
        .env("CI", "true")
        .arg("--reports-dir")
        .arg(reports.path())
        .arg("--registry")
        .arg(&db)
        .args(["run", "--resume", &run_id, "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "resuming run {run_id}: {} cases already judged",
            journal.len()
        )),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["run_id"], run_id.as_str());
    let cases = report["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3, "{report:#}");
    for judged in &journal {
        let again = cases.iter().find(|c| c["id"] == judged["id"]).unwrap();
        assert_eq!(
            again["duration_ms"], judged["duration_ms"],
            "{} was not run again",
            judged["id"]
        );
    }
    // Each case ran once in all: the journal now holds every case, none twice.
    let lines = std::fs::read_to_string(run_dir.join("cases.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3, "{lines}");
    assert!(run_dir.join("run.json").is_file() && run_dir.join("junit.xml").is_file());
    assert_eq!(
        lab_objects(&format!("canary-lab.run={run_id}")),
        (0, 0),
        "nothing of either pass is left"
    );
    // Each verdict is in the registry once.
    let results = Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["registry", "results", "--json"])
        .run()
        .code(0)
        .json();
    assert_eq!(results.as_array().unwrap().len(), 3, "{results:#}");

    // A run that is not there is an error that says what to name.
    std::process::Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(crate::helpers::root())
        .arg("--reports-dir")
        .arg(reports.path())
        .args(["run", "--resume", "../etc"])
        .output()
        .map(|o| {
            assert_eq!(o.status.code(), Some(2));
            assert!(String::from_utf8_lossy(&o.stderr).contains("no run `../etc` to resume"));
        })
        .unwrap();
}
