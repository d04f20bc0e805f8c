//! The registry fed by real runs: the promotion scenario of the gate, and concurrent recorders.

use crate::helpers::{Canary, require_lab, root};
use crate::registry::{Backend, Fresh, fresh};
use std::process::Command;

/// A distinct build of the base image: its own digest, runner version label, and (when
/// `broken`) a marker that makes the gate suite fail. Made once per machine.
fn test_build(name: &str, runner_version: &str, broken: bool) -> String {
    use std::os::fd::AsRawFd;
    let base = Command::new(env!("CARGO_BIN_EXE_canary"))
        .args(["images", "base", "--json"])
        .current_dir(root())
        .output()
        .unwrap();
    let base: serde_json::Value = serde_json::from_slice(&base.stdout).unwrap();
    // Built on this base image: a test build left by an older base is not reused.
    let base_tag = base["reference"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let tag = format!("canary-lab/test-build:{name}-{base_tag}");
    let lock = std::fs::File::create(std::env::temp_dir().join("canary-lab-test-builds.lock")).unwrap();
    // SAFETY: flock on a file we hold open for the rest of this function.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    if Command::new("docker")
        .args(["image", "inspect", &tag])
        .output()
        .unwrap()
        .status
        .success()
    {
        return tag;
    }
    let container = format!("canary-test-build-{name}-{}", std::process::id());
    let script = format!(
        "echo {name} > /etc/canary-build{}",
        if broken { " && touch /etc/canary-broken" } else { "" }
    );
    let run = Command::new("docker")
        .args([
            "run",
            "--name",
            &container,
            "-u",
            "0",
            base["reference"].as_str().unwrap(),
            "sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let commit = Command::new("docker")
        .args([
            "commit",
            "--change",
            &format!("LABEL canary-lab.runner-version={runner_version}"),
            "--change",
            "USER 1000:1000",
            "--change",
            r#"CMD ["sleep", "infinity"]"#,
            &container,
            &tag,
        ])
        .output()
        .unwrap();
    let _ = Command::new("docker").args(["rm", "-f", &container]).output();
    assert!(commit.status.success(), "{}", String::from_utf8_lossy(&commit.stderr));
    tag
}

fn canary(reg: &Fresh) -> Canary {
    Canary::new().args(["--registry", &reg.url])
}

fn run_gate_suite(reg: &Fresh, image: &str, expect: i32) -> String {
    let out = canary(reg)
        .args([
            "run",
            "-s",
            "tests/fixtures/suites/gate.yaml",
            "--image",
            image,
            "--json",
            "--jobs",
            "2",
        ])
        .run()
        .code(expect);
    out.json()["image"]["id"].as_str().unwrap().to_string()
}

fn promote(reg: &Fresh, build: &str, channel: &str) -> crate::helpers::Ran {
    canary(reg)
        .args([
            "promote",
            build,
            "--channel",
            channel,
            "--policy",
            "tests/fixtures/gate.yaml",
            "--actor",
            "release-bot",
            "--reason",
            "test",
        ])
        .run()
}

fn status(reg: &Fresh) -> serde_json::Value {
    canary(reg).args(["status", "--json"]).run().code(0).json()
}

fn runs(status: &serde_json::Value, org: &str) -> String {
    status["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["org"] == org)
        .unwrap_or_else(|| panic!("no org {org} in {status}"))["runs"]
        .as_str()
        .unwrap()
        .to_string()
}

fn scenario(backend: Backend) {
    require_lab();
    let reg = fresh(backend);
    let green = run_gate_suite(&reg, &test_build("green-1", "1.0.0", false), 0);
    let broken = run_gate_suite(&reg, &test_build("broken", "1.1.0", true), 1);

    // The green build is promoted; the broken one is refused with every reason, and audited.
    promote(&reg, &green, "stable").code(0).stdout_has("promoted to stable");
    let refused = promote(&reg, &broken, "stable").code(1);
    assert!(refused.stdout().contains("blocked from stable"), "{}", refused.stdout());
    assert!(
        refused.stdout().contains("suite `gate` on repo `js-ts`: fail")
            && refused.stdout().contains("suite `gate` on repo `python`: fail"),
        "{}",
        refused.stdout()
    );
    let audit = canary(&reg).args(["registry", "audit", "--json"]).run().code(0).json();
    assert_eq!(audit[0]["decision"], "blocked");
    assert_eq!(audit[0]["actor"], "release-bot");
    assert!(
        audit[0]["reason"]
            .as_str()
            .unwrap()
            .contains("suite `gate` on repo `js-ts`: fail")
    );
    // A dry run explains without writing anything.
    promote(&reg, &broken, "stable").code(1);
    let before = canary(&reg)
        .args(["registry", "audit", "--json", "--limit", "1000"])
        .run()
        .json()
        .as_array()
        .unwrap()
        .len();
    canary(&reg)
        .args([
            "promote",
            &broken,
            "--channel",
            "stable",
            "--policy",
            "tests/fixtures/gate.yaml",
            "--dry-run",
        ])
        .run()
        .code(1)
        .stdout_has("would be blocked");
    assert_eq!(
        canary(&reg)
            .args(["registry", "audit", "--json", "--limit", "1000"])
            .run()
            .json()
            .as_array()
            .unwrap()
            .len(),
        before
    );

    // Orgs: one follows stable, one is pinned by digest; a build never promoted cannot be pinned.
    canary(&reg)
        .args(["pin", "--org", "acme", "--channel", "stable"])
        .run()
        .code(0);
    canary(&reg)
        .args(["pin", "--org", "globex", "--build", &green])
        .run()
        .code(0);
    canary(&reg)
        .args(["pin", "--org", "initech", "--build", &broken])
        .run()
        .code(1);
    let green2 = run_gate_suite(&reg, &test_build("green-2", "1.2.0", false), 0);
    promote(&reg, &green2, "stable").code(0);
    let s = status(&reg);
    assert_eq!(s["channels"][0]["build"], green2.as_str());
    assert_eq!(s["channels"][0]["previous_known_good"], green.as_str());
    assert_eq!(runs(&s, "acme"), green2, "a following org moves with its channel");
    assert_eq!(runs(&s, "globex"), green, "a pinned org stays put");

    // Rollback: at once, to the previous known-good build.
    canary(&reg)
        .args(["rollback", "--org", "acme", "--reason", "incident 42"])
        .run()
        .code(0);
    assert_eq!(runs(&status(&reg), "acme"), green);
    canary(&reg).args(["rollback", "--channel", "stable"]).run().code(0);
    assert_eq!(status(&reg)["channels"][0]["build"], green.as_str());
    // The last two known-good builds are protected.
    canary(&reg)
        .args(["registry", "forget", &green2])
        .run()
        .code(1)
        .stderr_has("last two known-good builds of `stable`");

    let audit = canary(&reg)
        .args(["registry", "audit", "--json", "--limit", "1000"])
        .run()
        .json();
    let steps: Vec<String> = audit
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|a| format!("{} {}", a["action"].as_str().unwrap(), a["decision"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            "promote promoted",
            "promote blocked",
            "promote blocked",
            "pin done",
            "pin done",
            "pin refused",
            "promote promoted",
            "rollback done",
            "rollback done",
            "forget refused"
        ],
        "every step is audited, in order"
    );
    let matrix = canary(&reg).args(["registry", "matrix", "--json"]).run().code(0).json();
    assert!(
        matrix
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["runtime"] == "runner@1.1.0" && r["status"] == "fail"),
        "{matrix}"
    );
}

#[test]
fn gate_scenario_sqlite() {
    scenario(Backend::Sqlite)
}

#[test]
fn gate_scenario_postgres() {
    scenario(Backend::Postgres)
}

#[test]
fn eight_concurrent_runs_record_every_case() {
    require_lab();
    let reg = fresh(Backend::Sqlite);
    let children: Vec<_> = (0..8)
        .map(|_| {
            let (mut cmd, reports) = canary(&reg)
                .args(["run", "-s", "tests/fixtures/suites/quick.yaml", "--jobs", "1"])
                .command();
            (
                cmd.stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap(),
                reports,
            )
        })
        .collect();
    for (child, _reports) in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let results = canary(&reg)
        .args(["registry", "results", "--limit", "1000", "--json"])
        .run()
        .code(0)
        .json();
    assert_eq!(results.as_array().unwrap().len(), 24, "8 runs × 3 cases, none lost");
}
