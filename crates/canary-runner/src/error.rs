//! The lab's error type and the one place that maps errors to exit codes.
//!
//! Every failure that stops the lab from producing a verdict is a [`LabError`]: a suite that does
//! not parse, a repo that does not match its pin, a Docker engine that cannot be reached. A case
//! that runs and fails is *not* an error: it is a verdict, carried by the report.

use miette::{Diagnostic, NamedSource, SourceSpan};
use thiserror::Error;

/// Exit codes, documented in the README and `canary --help`.
pub mod exit {
    /// Every case passed (or the command did what it was asked).
    pub const PASS: i32 = 0;
    /// At least one case failed or timed out; or a gate blocked.
    pub const FAILED: i32 = 1;
    /// The lab itself could not run: bad input, Docker unreachable, missing image, ...
    pub const ERROR: i32 = 2;
}

/// A problem located in a file the user wrote (suite, repo manifest, lab config).
#[derive(Debug, Error, Diagnostic)]
#[error("{message}")]
pub struct SourceError {
    pub message: String,
    #[source_code]
    pub src: NamedSource<String>,
    #[label("{label}")]
    pub span: SourceSpan,
    pub label: String,
    #[help]
    pub help: Option<String>,
    /// A second place worth pointing at (e.g. the first definition of a duplicate).
    #[label("{related_label}")]
    pub related: Option<SourceSpan>,
    pub related_label: String,
}

impl SourceError {
    /// `file:line:column` of the primary span, for plain-text and JSON output.
    pub fn location(&self) -> String {
        let text = self.src.inner();
        let offset = self.span.offset().min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("{}:{line}:{column}", self.src.name())
    }
}

#[derive(Debug, Error, Diagnostic)]
pub enum LabError {
    #[error("{}: {}", .0.location(), .0.message)]
    #[diagnostic(transparent)]
    Source(Box<SourceError>),

    #[error("cannot read {path}: {source}")]
    #[diagnostic(help("check the path; it is resolved relative to the current directory"))]
    Read { path: String, source: std::io::Error },

    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },

    #[error("unknown canary repo `{id}`")]
    #[diagnostic(help("known repos: {known}; each lives in canary-repos/<id>/ with a canary-repo.yaml"))]
    UnknownRepo { id: String, known: String },

    #[error("canary repo `{id}` does not match its pinned digest")]
    #[diagnostic(help(
        "pinned {pinned}, content is {actual}. If the change is intended, run `canary repos pin {id}` and commit the manifest"
    ))]
    RepoPinMismatch { id: String, pinned: String, actual: String },

    #[error("cannot reach the Docker engine: {reason}")]
    #[diagnostic(help("start it (`dockerd &` or `systemctl start docker`), or point DOCKER_HOST at a running engine"))]
    DockerUnreachable { reason: String },

    #[error("image `{image}` is not present in the Docker engine")]
    #[diagnostic(help("{hint}"))]
    ImageMissing { image: String, hint: String },

    #[error("docker: {context}: {message}")]
    Docker { context: String, message: String },

    #[error("{0}")]
    #[diagnostic(help("{1}"))]
    Usage(String, String),

    #[error("registry {url}: {message}")]
    #[diagnostic(help(
        "the registry is --registry or `registry:` in canary.yaml: a SQLite path (created on first use) or a postgres:// URL of a reachable server; the message is the database's own"
    ))]
    Registry { url: String, message: String },

    #[error("image registry {registry}: {message}")]
    #[diagnostic(help("{hint}"))]
    ImageRegistry {
        registry: String,
        message: String,
        hint: String,
    },

    #[error("image build failed: {0}")]
    ImageBuild(String),

    #[error("interrupted")]
    Interrupted,
}

impl LabError {
    pub fn usage(message: impl Into<String>, help: impl Into<String>) -> Self {
        LabError::Usage(message.into(), help.into())
    }

    pub fn read(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        LabError::Read {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    pub fn write(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        LabError::Write {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// Errors never mean "the candidate failed": they all map to [`exit::ERROR`].
    pub fn exit_code(&self) -> i32 {
        exit::ERROR
    }

    /// The error as the object a `--json` caller reads on stdout: message, the file location
    /// when it has one, the help line, and the exit code.
    pub fn to_json(&self) -> serde_json::Value {
        let location = match self {
            LabError::Source(s) => Some(s.location()),
            _ => None,
        };
        let help = Diagnostic::help(self).map(|h| h.to_string());
        serde_json::json!({"error": {"message": self.to_string(), "location": location, "help": help, "exit_code": self.exit_code()}})
    }
}

impl From<SourceError> for LabError {
    fn from(e: SourceError) -> Self {
        LabError::Source(Box::new(e))
    }
}

pub type Result<T, E = LabError> = std::result::Result<T, E>;
