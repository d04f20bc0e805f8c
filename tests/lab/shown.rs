//! What the README and docs show a command printing is what it prints. A fenced block right
//! after a `<!-- shown: NAME -->` line is the output of the fixture NAME: a test runs that
//! fixture (this file's, or a Docker test's for a real run) and compares, so a changed message,
//! column or flag breaks a test, not a reader. In a shown block `…` stands for any text within
//! a line, and a 12-digit build id for any build id; the shown lines must appear in the output in
//! order, one after another.

use crate::helpers::{Canary, root};

/// Every shown block: (name, `file:line`, the block's text).
fn blocks() -> Vec<(String, String, String)> {
    let root = root();
    let files = crate::helpers::doc_files();
    let mut out = Vec::new();
    for file in files {
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(fixture) = line
                .trim()
                .strip_prefix("<!-- shown: ")
                .and_then(|r| r.strip_suffix(" -->"))
            else {
                continue;
            };
            assert!(
                lines.get(i + 1).is_some_and(|l| l.starts_with("```")),
                "{name}:{}: a shown marker stands right before a fenced block",
                i + 1
            );
            let body: Vec<&str> = lines[i + 2..]
                .iter()
                .take_while(|l| !l.starts_with("```"))
                .copied()
                .collect();
            out.push((fixture.to_string(), format!("{name}:{}", i + 3), body.join("\n")));
        }
    }
    out
}

/// The shown block `name` (exactly one).
fn block(name: &str) -> (String, String) {
    let found: Vec<_> = blocks().into_iter().filter(|(n, _, _)| n == name).collect();
    assert_eq!(found.len(), 1, "one block is shown as `{name}`");
    let (_, at, text) = found.into_iter().next().unwrap();
    (at, text)
}

/// One piece of a shown line.
#[derive(Debug)]
enum Piece {
    Char(char),
    /// `…`: any text within the line.
    Any,
    /// A 12-digit build id: any 12 hex digits.
    Id,
}

fn pieces(shown: &str) -> Vec<Piece> {
    let chars: Vec<char> = shown.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let run = chars[i..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
        let starts_word = i == 0 || !chars[i - 1].is_ascii_alphanumeric();
        if run == 12 && starts_word && chars.get(i + 12).is_none_or(|c| !c.is_ascii_alphanumeric()) {
            out.push(Piece::Id);
            i += 12;
        } else if chars[i] == '…' {
            out.push(Piece::Any);
            i += 1;
        } else {
            out.push(Piece::Char(chars[i]));
            i += 1;
        }
    }
    out
}

/// Whether one shown line stands for one printed line (trailing spaces aside).
fn line_matches(shown: &str, printed: &str) -> bool {
    fn go(p: &[Piece], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some(Piece::Char(c)) => t.first() == Some(c) && go(&p[1..], &t[1..]),
            Some(Piece::Id) => t.len() >= 12 && t[..12].iter().all(|c| c.is_ascii_hexdigit()) && go(&p[1..], &t[12..]),
            Some(Piece::Any) => (0..=t.len()).any(|i| go(&p[1..], &t[i..])),
        }
    }
    let t: Vec<char> = printed.trim_end().chars().collect();
    go(&pieces(shown.trim_end()), &t)
}

/// Fails unless the block shown as `name` appears in `printed`, line after line.
pub fn assert_shows(name: &str, printed: &str) {
    let (at, shown) = block(name);
    let shown: Vec<&str> = shown.lines().collect();
    let printed: Vec<&str> = printed.lines().collect();
    let found = (0..printed.len().saturating_sub(shown.len() - 1))
        .any(|start| shown.iter().zip(&printed[start..]).all(|(s, p)| line_matches(s, p)));
    assert!(
        found,
        "{at} shows what `{name}` prints, but it prints something else.\n--- shown\n{}\n--- printed\n{}",
        shown.join("\n"),
        printed.join("\n")
    );
}

#[test]
fn the_matcher_takes_ellipses_and_build_ids_and_nothing_else() {
    assert!(line_matches(
        "build 1b2c3d4e5f60 promoted",
        "build 0123456789ab promoted"
    ));
    assert!(!line_matches("build 1b2c3d4e5f60 promoted", "build 0123 promoted"));
    assert!(line_matches(
        "since 2026-…Z: runner",
        "since 2026-12-06T05:01:02Z: runner"
    ));
    assert!(!line_matches("since 2026-11-22T…Z", "since 2026-12-06T05:01:02Z"));
    assert!(!line_matches("a (b) [c]", "a (b) [d]"));
    assert!(line_matches("a (b) [c] x.y", "a (b) [c] x.y"));
    assert!(!line_matches("x.y", "xzy"));
}

/// A suite with a misspelled key: the README's error, to the character.
#[test]
fn the_readme_shows_the_suite_error_canary_prints() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("suites")).unwrap();
    std::fs::copy(
        root().join("tests/fixtures/shown/mine.yaml"),
        dir.path().join("suites/mine.yaml"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(dir.path())
        .arg("--repos-dir")
        .arg(root().join("canary-repos"))
        .args(["suites", "check", "suites/mine.yaml"])
        .env("CI", "true")
        .env_remove("CANARY_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_shows("suite-error", &String::from_utf8_lossy(&out.stderr));
}

/// The README's refused promotion: a build whose gate suite failed on one repo and could not
/// run on the other, under the registry tests' gate.yaml.
#[test]
fn the_readme_shows_the_refusal_canary_prints() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("tests/fixtures/gate.yaml"), dir.path().join("gate.yaml")).unwrap();
    let db = dir.path().join("r.db");
    let url = format!("sqlite://{}", db.display());
    let id = format!("sha256:1b2c3d4e5f60{}", "0".repeat(52));
    let build =
        canary::registry::BuildInfo::from_image(&id.parse().unwrap(), "canary-lab/build:shown", &Default::default());
    let rows = [
        ("run-1".to_string(), "gate".to_string(), "js-ts".to_string(), "fail"),
        (
            "run-1".to_string(),
            "gate".to_string(),
            "python".to_string(),
            "infra_error",
        ),
    ];
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let reg = canary::registry::Registry::open(&url).await.unwrap();
            reg.seed_results(&build, &rows).await.unwrap();
        });
    let out = Canary::new()
        .args(["--registry", &url, "--repos-dir"])
        .arg_path(&root().join("canary-repos"))
        .args(["promote", "sha256:1b2c3d", "--channel", "stable"])
        .command()
        .0
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_shows("promote-blocked", &String::from_utf8_lossy(&out.stdout));
}

/// Every shown block has a test that runs it (a name no test knows is a block nobody checks).
#[test]
fn every_shown_block_is_checked() {
    let known = ["suite-error", "promote-blocked", "demo-promoted"];
    let all = blocks();
    assert!(all.len() >= known.len(), "{all:?}");
    for (name, at, _) in &all {
        assert!(
            known.contains(&name.as_str()),
            "{at}: no test runs the fixture `{name}`"
        );
    }
}
