//! What a person sees, line by line. With `--json` every human line goes to
//! stderr so stdout holds only the summary; `--quiet` keeps only errors.
//! Every line prints around the live display ([`crate::progress`]).

use std::io::Write;

/// Where human output goes; clones share the live display.
#[derive(Debug, Clone, Default)]
pub struct Console {
    /// Human lines go to stderr; stdout is for the JSON summary.
    pub json: bool,
    /// Only errors.
    pub quiet: bool,
    /// The live display on a terminal (off by default).
    pub progress: crate::progress::Progress,
    /// `[name] ` before every line, for agents of a team.
    pub prefix: String,
}

impl Console {
    /// Main output: the banner, `CYCLE n:` lines, the ending.
    pub fn out(&self, line: &str) {
        if self.quiet {
            return;
        }
        let prefix = &self.prefix;
        if self.json {
            eprintln!("{prefix}{line}");
        } else {
            self.progress.suspend(|| {
                let mut o = std::io::stdout().lock();
                let _ = writeln!(o, "{prefix}{line}");
                let _ = o.flush();
            });
        }
    }

    /// Warnings share the main stream so they interleave correctly with cycles.
    pub fn warn(&self, line: &str) {
        self.out(line);
    }

    /// Secondary lines (plugin logs, anomalies): stderr.
    pub fn note(&self, line: &str) {
        if !self.quiet {
            self.progress.suspend(|| eprintln!("{line}"));
        }
    }

    /// Errors print whatever the flags.
    pub fn error(&self, line: &str) {
        self.progress.suspend(|| eprintln!("error: {line}"));
    }
}
