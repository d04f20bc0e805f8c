//! Progress for long work: live bars on a terminal, one plain line per event elsewhere (CI logs
//! keep every line; a bar redrawn in a log file is noise).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
    quiet: bool,
}

impl Progress {
    /// `quiet` silences everything (e.g. `--json` with nothing on stderr wanted).
    pub fn new(quiet: bool) -> Progress {
        let tty = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        let multi = (tty && !quiet).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { multi, quiet }
    }

    pub fn is_live(&self) -> bool {
        self.multi.is_some()
    }

    /// A line that stays (printed above live bars on a terminal).
    pub fn line(&self, text: impl AsRef<str>) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(text.as_ref());
            }
            None => eprintln!("{}", text.as_ref()),
        }
    }

    /// A counter bar over `total` items; hidden when not live.
    pub fn bar(&self, total: u64, label: &str) -> ProgressBar {
        match &self.multi {
            Some(m) => {
                let bar = m.add(ProgressBar::new(total));
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} {elapsed} {msg}")
                        .expect("static template")
                        .progress_chars("=> "),
                );
                bar.set_prefix(label.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            }
            None => ProgressBar::hidden(),
        }
    }

    /// A spinner for one stage of unknown length; hidden when not live.
    pub fn spinner(&self, label: &str) -> ProgressBar {
        match &self.multi {
            Some(m) => {
                let s = m.add(ProgressBar::new_spinner());
                s.set_style(
                    ProgressStyle::with_template("{spinner} {prefix} {elapsed} {wide_msg}").expect("static template"),
                );
                s.set_prefix(label.to_string());
                s.enable_steady_tick(Duration::from_millis(120));
                s
            }
            None => ProgressBar::hidden(),
        }
    }
}
