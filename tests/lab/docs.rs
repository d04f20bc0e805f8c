//! The commands the README and docs show a person are the commands `canary` has: every
//! `canary ...` line in a code block and every inline `canary ...` synopsis names subcommands
//! that exist, and every flag it shows is one those subcommands take. A renamed flag or
//! subcommand breaks this test, not a reader.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Every `canary ...` the documents show, with where it stands (`file:line`).
fn shown_commands() -> Vec<(String, String)> {
    shown_commands_where().into_iter().map(|(at, c, _)| (at, c)).collect()
}

/// Every `canary ...` the documents show, where it stands, and whether it is a shell line in a
/// code block (`true`) or an inline synopsis.
fn shown_commands_where() -> Vec<(String, String, bool)> {
    let root = crate::helpers::root();
    let files = crate::helpers::doc_files();
    let mut out = Vec::new();
    for file in files {
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        let mut fenced = false;
        for (i, line) in text.lines().enumerate() {
            let at = format!("{name}:{}", i + 1);
            if line.starts_with("```") {
                fenced = !fenced;
                continue;
            }
            if fenced {
                // A shell line: `canary ...` (or `$ canary ...`), its comment cut off; `&&` joins two.
                let line = line.trim().trim_start_matches("$ ");
                let line = line.split(" #").next().unwrap();
                for part in line.split("&&") {
                    let part = part.trim();
                    if is_command(part) {
                        out.push((at.clone(), part.to_string(), true));
                    }
                }
            } else {
                // Inline synopses: `canary run --suite FILE... [--repo ID...]`.
                for (j, span) in line.split('`').enumerate() {
                    if j % 2 == 1 && is_command(span) {
                        out.push((at.clone(), span.replace("\\|", "|"), false));
                    }
                }
            }
        }
    }
    out
}

/// `canary <subcommand>...`: one space, then a word of a subcommand's shape, so the crate map
/// in docs/architecture.md (`canary            the command line`) is prose, not a command.
fn is_command(s: &str) -> bool {
    s.strip_prefix("canary ").is_some_and(|rest| {
        rest.split_whitespace().next().is_some_and(|w| {
            !rest.starts_with(' ')
                && !w.starts_with('-')
                && w.chars().all(|c| c.is_ascii_lowercase() || c == '-' || c == '|')
        })
    })
}

/// The subcommand paths a synopsis names (`freeze|unfreeze` is two) and the flags it shows.
fn parse(command: &str) -> (Vec<Vec<String>>, BTreeSet<String>) {
    let words: Vec<&str> = command.split_whitespace().skip(1).collect();
    let mut paths: Vec<Vec<String>> = vec![Vec::new()];
    for w in words
        .iter()
        .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-' || c == '|') && !w.starts_with('-'))
    {
        paths = paths
            .iter()
            .flat_map(|p| {
                w.split('|').map(move |alt| {
                    let mut p = p.clone();
                    p.push(alt.to_string());
                    p
                })
            })
            .collect();
    }
    let flags = command
        .split(|c: char| c.is_whitespace() || matches!(c, '[' | ']' | '(' | ')' | '|' | '='))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches("...").trim_end_matches('…').to_string())
        .collect();
    (paths, flags)
}

/// Every `canary ...` the program itself tells a person to run (a `help:` line, a hint after a
/// result, a refusal's way out), from the string literals of its sources, with where it stands.
fn suggested_commands() -> Vec<(String, String)> {
    let root = crate::helpers::root();
    let mut files = Vec::new();
    let mut dirs = vec![root.join("src"), root.join("crates")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            // Doc comments speak to developers; what is printed stands in string literals.
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (j, span) in line.split('`').enumerate() {
                if j % 2 == 1 && is_command(span) {
                    out.push((format!("{name}:{}", i + 1), span.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn every_command_the_readme_and_docs_show_has_its_subcommands_and_flags() {
    let shown = shown_commands();
    assert!(
        shown.len() > 60,
        "the documents show the commands: found {}",
        shown.len()
    );
    check_commands(&shown, "the documents show");
}

/// Every command a `help:` line, a hint or a refusal suggests names subcommands and flags
/// `canary` has: a person who runs the suggestion gets the command, not a usage error.
#[test]
fn every_command_the_program_suggests_has_its_subcommands_and_flags() {
    let suggested = suggested_commands();
    assert!(
        suggested.len() > 50,
        "the program suggests commands: found {}",
        suggested.len()
    );
    check_commands(&suggested, "the program suggests");
}

fn check_commands(shown: &[(String, String)], who: &str) {
    let canary = Path::new(env!("CARGO_BIN_EXE_canary"));
    let mut wrong = Vec::new();
    for (at, command) in shown {
        let (paths, flags) = parse(command);
        for path in paths {
            let help = Command::new(canary)
                .args(&path)
                .arg("--help")
                .env("CI", "true")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&help.stdout);
            if !help.status.success() {
                wrong.push(format!(
                    "{at}: `canary {}` is not a command ({})",
                    path.join(" "),
                    String::from_utf8_lossy(&help.stderr).lines().next().unwrap_or_default()
                ));
                continue;
            }
            for flag in &flags {
                let taken = text
                    .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '<')
                    .any(|w| w == flag);
                if !taken {
                    wrong.push(format!(
                        "{at}: `canary {}` takes no {flag} (in `{command}`)",
                        path.join(" ")
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{who} commands canary does not have:\n{}",
        wrong.join("\n")
    );
}

/// The suggestions a person can run as written (no placeholder to fill in) and that only read:
/// each is run against a registry with nothing in it yet, and answers (exit 0 or 1), never with
/// a usage error or a crash (exit 2).
#[test]
fn every_read_only_suggestion_runs_as_written() {
    const READS: [&str; 9] = [
        "canary registry builds",
        "canary registry",
        "canary status",
        "canary status --json",
        "canary repos list",
        "canary tokens list",
        "canary rollout list",
        "canary sweeps status",
        "canary kpis",
    ];
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("r.db");
    let canary = |words: &[&str]| canary_on(&registry, words);
    assert_eq!(canary(&["registry", "init"]).status.code(), Some(0));
    let mut ran = 0;
    let mut wrong = Vec::new();
    for (at, command) in suggested_commands() {
        if !READS.contains(&command.as_str()) {
            continue;
        }
        let words: Vec<&str> = command.split_whitespace().skip(1).collect();
        let out = canary(&words);
        let code = out.status.code();
        // `canary registry` alone is a group: clap shows its commands (exit 2 by clap's rule).
        let group = words == ["registry"];
        if !(matches!(code, Some(0) | Some(1)) || group && code == Some(2)) {
            wrong.push(format!(
                "{at}: `{command}` exits {code:?}: {}",
                String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or_default()
            ));
        }
        ran += 1;
    }
    assert!(ran >= 6, "the read-only suggestions were found and run: {ran}");
    assert!(
        wrong.is_empty(),
        "suggestions that do not run as written:\n{}",
        wrong.join("\n")
    );
}

/// The release engineer's and admin's commands the docs show, run as written against a fixture
/// lab: a registry whose stable channel has a build and a green candidate whose id begins as
/// the docs write it (`sha256:4f2a…`, the ellipsis standing for the rest of the id). Each does
/// what the docs say (exit 0); a changed flag, subcommand or refusal breaks this test.
#[test]
fn the_release_commands_the_docs_show_run_against_a_fixture_lab() {
    // In the order a person follows them: start a rollout, watch it, the status, tokens.
    const RUNS: [&str; 4] = ["rollout start", "rollout status", "status", "tokens create"];
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("r.db");
    let url = format!("sqlite://{}", registry.display());
    let base = format!("sha256:{}", "1".repeat(64));
    let candidate = format!("sha256:4f2a{}", "0".repeat(60));
    crate::rollout::seed_build_id(&url, &base, "pass");
    crate::rollout::seed_build_id(&url, &candidate, "pass");
    let canary = |words: &[&str]| canary_on(&registry, words);
    let setup = canary(&["promote", &base, "--channel", "stable"]);
    assert_eq!(
        setup.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    // Shell lines in code blocks, as a person copies them (synopses name placeholders).
    let mut shown: Vec<(usize, String, String)> = shown_commands_where()
        .into_iter()
        .filter(|(_, c, fenced)| *fenced && !c.contains('<'))
        .filter_map(|(at, c, _)| {
            let path = c
                .split_whitespace()
                .skip(1)
                .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-'))
                .collect::<Vec<_>>()
                .join(" ");
            let rank = RUNS.iter().position(|r| path == *r)?;
            Some((rank, at, c))
        })
        .collect();
    shown.sort();
    shown.dedup_by(|a, b| a.2 == b.2);
    let mut wrong = Vec::new();
    for (_, at, command) in &shown {
        let command = command.replace("sha256:4f2a…", &candidate);
        let words: Vec<&str> = command.split_whitespace().skip(1).collect();
        let out = canary(&words);
        if out.status.code() != Some(0) {
            wrong.push(format!(
                "{at}: `{command}` exits {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    let ran: Vec<&str> = shown.iter().map(|(_, _, c)| c.as_str()).collect();
    for r in RUNS {
        assert!(
            ran.iter().any(|c| c.starts_with(&format!("canary {r}"))),
            "the docs show `canary {r}`: {ran:?}"
        );
    }
    assert!(
        wrong.is_empty(),
        "commands the docs show that do not run as written:\n{}",
        wrong.join("\n")
    );
    // The rollout the docs started is the one `rollout status` showed: the candidate, on stable.
    let status = canary(&["rollout", "status", "--channel", "stable", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["rollout"]["build_id"], candidate.as_str());
}

/// `canary --registry REGISTRY WORDS...` from the checkout, as in CI, with no lab config from
/// the environment.
fn canary_on(registry: &Path, words: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(crate::helpers::root())
        .arg("--registry")
        .arg(registry)
        .args(words)
        .env("CI", "true")
        .env_remove("CANARY_CONFIG")
        .output()
        .unwrap()
}
