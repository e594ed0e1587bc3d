//! The verdicts of a scenario run: every check printed as `PASS` or `FAIL` with what it
//! proves as it happens, and kept for the test's failure message.

use std::fmt;
use std::time::{Duration, Instant};

/// The outcome of a scenario run: every check with its verdict.
#[derive(Debug, Default)]
pub struct Report {
    /// Checks that held.
    pub passed: usize,
    /// Checks that did not.
    pub failed: usize,
    lines: Vec<String>,
}

impl Report {
    pub(crate) fn step(&mut self, title: &str, proves: &str) {
        self.print(format!("\n=== {title}\n    proves: {proves}"));
    }

    pub(crate) fn check(
        &mut self,
        ok: bool,
        what: impl fmt::Display,
        detail: impl fmt::Display,
    ) -> bool {
        let detail = detail.to_string();
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        let verdict = if ok { "PASS" } else { "FAIL" };
        let detail = if detail.is_empty() || ok {
            String::new()
        } else {
            format!("  [{detail}]")
        };
        self.print(format!("  {verdict}  {what}{detail}"));
        ok
    }

    pub(crate) fn note(&mut self, text: impl fmt::Display) {
        self.print(format!("      {text}"));
    }

    pub(crate) fn print(&mut self, line: String) {
        println!("{line}");
        self.lines.push(line);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        write!(f, "{} passed, {} failed", self.passed, self.failed)
    }
}

/// "{what} {elapsed} s after {since} (limit {limit} s)", for checks of how long
/// something took.
pub(crate) fn timed(what: &str, started: Instant, since: &str, limit: Duration) -> String {
    format!(
        "{what} {:.1} s after {since} (limit {} s)",
        started.elapsed().as_secs_f64(),
        limit.as_secs()
    )
}
