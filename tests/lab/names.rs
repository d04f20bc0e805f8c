//! Channel and provider names are spelled in one place, `canary-contract`: code elsewhere says
//! `Channel::STABLE` or `Provider::Codex.name()`, so a renamed or added one is a change to one
//! file and the compiler finds every use. Tests may spell them (they are what a user types).

use canary::contract::{Channel, Provider};

/// Rust files of every crate but the contract, with tests cut off (`tests.rs` files, and the
/// rest of a file from its `#[cfg(test)]`).
fn sources() -> Vec<(String, String)> {
    let root = crate::helpers::root();
    let mut dirs = vec![root.join("src")];
    for e in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        if e.file_name() != "canary-contract" {
            dirs.push(e.path().join("src"));
        }
    }
    let mut out = Vec::new();
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") && p.file_name().is_some_and(|n| n != "tests.rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap().to_string();
                out.push((p.strip_prefix(&root).unwrap().display().to_string(), code));
            }
        }
    }
    out
}

#[test]
fn channel_and_provider_names_are_spelled_only_in_the_contract() {
    let names: Vec<String> = Channel::BUILT_IN
        .iter()
        .map(|c| c.to_string())
        .chain(Provider::ALL.iter().map(|p| p.name().to_string()))
        .collect();
    let files = sources();
    assert!(files.len() > 100, "the crates' sources are read: {}", files.len());
    let mut spelled = Vec::new();
    for (file, code) in &files {
        for (i, line) in code.lines().enumerate() {
            let trimmed = line.trim_start();
            // Comments are prose; a line that says it is `not a channel` is another word that
            // happens to be spelled the same (PEP 440's `beta`).
            if trimmed.starts_with("//") || line.contains("not a channel") {
                continue;
            }
            for name in &names {
                if line.contains(&format!("\"{name}\"")) {
                    spelled.push(format!("{file}:{}: \"{name}\" in `{}`", i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        spelled.is_empty(),
        "say Channel::STABLE / Channel::BETA or Provider::X.name() instead:\n{}",
        spelled.join("\n")
    );
}
