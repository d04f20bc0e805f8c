//! Scenarios: what the scripted model does, independent of any wire protocol. Each turn is one
//! model response; the protocol modules render it into the CLI's own tool calls.

use crate::error::{LabError, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One model turn.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Turn {
    /// Ask the CLI to run a shell command.
    Run(String),
    /// Ask the CLI to replace the first occurrence of `replace` with `with` in `file`.
    Edit {
        file: String,
        replace: String,
        with: String,
    },
    /// Ask the CLI to run a risky command that the runner's policy should block.
    Attempt(String),
    /// Call a tool of the lab's MCP server fixture (`ticket_status`) with these arguments; the
    /// lab checks the call reached the server and its answer reached the model.
    Mcp {
        tool: String,
        #[serde(default)]
        arguments: serde_json::Value,
    },
    /// Answer with text and end the session (always the last turn).
    Say(String),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub turns: Vec<Turn>,
}

/// What a turn asks of the CLI, protocol-neutral.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Shell(String),
    /// Call the offered tool named `tool` (or `<server>__tool`, as CLIs name MCP tools).
    Tool {
        tool: String,
        arguments: serde_json::Value,
    },
    Text(String),
}

impl Turn {
    pub fn action(&self) -> Action {
        match self {
            Turn::Run(cmd) | Turn::Attempt(cmd) => Action::Shell(cmd.clone()),
            Turn::Edit { file, replace, with } => Action::Shell(edit_command(file, replace, with)),
            Turn::Mcp { tool, arguments } => Action::Tool {
                tool: tool.clone(),
                arguments: arguments.clone(),
            },
            Turn::Say(text) => Action::Text(text.clone()),
        }
    }
}

/// A shell command that makes a literal, single replacement and fails loudly when the text
/// is not there (python3 is in every canary image; sed would need escaping of both sides).
fn edit_command(file: &str, replace: &str, with: &str) -> String {
    let lit = |s: &str| serde_json::to_string(s).expect("string serializes");
    let program = format!(
        "import pathlib,sys; p=pathlib.Path({f}); s=p.read_text(); o={o}; n={n}\nif o not in s: sys.exit('edit: text not found in ' + str(p))\np.write_text(s.replace(o, n, 1))",
        f = lit(file),
        o = lit(replace),
        n = lit(with)
    );
    format!("python3 -c {}", shell_quote(&program))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Scenario {
    /// Checks the shape a CLI session can follow: at least one turn, `say` only at the end.
    pub fn validate(&self) -> Result<()> {
        if self.turns.is_empty() {
            return Err(LabError::usage(
                "a scenario needs at least one turn",
                "add `- say: done` at least",
            ));
        }
        if let Some(i) = self
            .turns
            .iter()
            .take(self.turns.len() - 1)
            .position(|t| matches!(t, Turn::Say(_)))
        {
            return Err(LabError::usage(
                format!("turn {} is `say`, but `say` ends the session", i + 1),
                "put `say` last; use `run: echo ...` for output in between",
            ));
        }
        Ok(())
    }

    /// Reads a scenario file (bounded like every input file).
    pub fn read(path: &std::path::Path) -> Result<Scenario> {
        let text = crate::fsutil::read_input(path, "scenario", crate::fsutil::MAX_INPUT)?;
        Scenario::parse(&path.display().to_string(), &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Scenario> {
        let s: Scenario = crate::yaml::parse(
            file,
            text,
            "scenario",
            "a scenario is `turns:` with run / edit / attempt / mcp / say items",
        )?;
        s.validate()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_renders_a_literal_replacement_that_runs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.js");
        std::fs::write(&file, "const G = \"Hello\"; // it's 'quoted'\n").unwrap();
        let Action::Shell(cmd) = Turn::Edit {
            file: file.display().to_string(),
            replace: "\"Hello\"".into(),
            with: "\"Howdy\"".into(),
        }
        .action() else {
            panic!()
        };
        let ok = std::process::Command::new("sh").arg("-c").arg(&cmd).status().unwrap();
        assert!(ok.success());
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "const G = \"Howdy\"; // it's 'quoted'\n"
        );
        let again = std::process::Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
        assert!(
            !again.status.success(),
            "a missing text is an error, not a silent no-op"
        );
    }

    #[test]
    fn say_must_be_last() {
        assert!(Scenario::parse("s.yaml", "turns:\n  - say: hi\n  - run: ls\n").is_err());
        let s = Scenario::parse(
            "s.yaml",
            "turns:\n  - run: ls\n  - edit: {file: a, replace: b, with: c}\n  - say: done\n",
        )
        .unwrap();
        assert_eq!(s.turns.len(), 3);
    }
}
