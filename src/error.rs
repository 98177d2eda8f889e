//! The one error type of iii: a message that names what failed, printed as `error: …`.
//!
//! Errors are human sentences built where the failure is understood; `Context` prefixes
//! the lower-level cause with what was being attempted ("reading config.yaml: …").

use std::fmt;

/// A failure, printed as one line: `error: <message>`.
#[derive(Debug)]
pub struct Error {
    message: String,
    /// Process exit code the CLI uses for this failure (1 unless a command says otherwise).
    pub exit_code: i32,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            exit_code: 1,
        }
    }

    /// The same error with a specific CLI exit code (e.g. 125 for `exec`).
    pub fn with_exit_code(mut self, code: i32) -> Self {
        self.exit_code = code;
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, always: a multi-line cause would break `error: …` parsing in scripts.
        f.write_str(&bounded(&self.message.replace('\n', " ")))
    }
}

/// Longest quoted value (`"…"` or `` `…` ``) an error line repeats in full.
const MAX_QUOTED: usize = 64;
/// Longest error line, quoted values already shortened.
const MAX_LINE: usize = 1024;

/// `message` with every quoted value longer than [`MAX_QUOTED`] characters cut to an
/// excerpt ending in `…`, and the whole cut at [`MAX_LINE`]: an error about a 10 MB value (a
/// config.yaml that is a symlink to some other file, one huge line) names it, not prints it.
fn bounded(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_LINE + 8));
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' && c != '`' {
            continue;
        }
        // Inside a quoted value: copy up to MAX_QUOTED characters of it, skip the rest.
        let mut kept = 0;
        let mut cut = false;
        let mut escaped = false;
        for q in chars.by_ref() {
            let closing = q == c && !escaped;
            escaped = c == '"' && q == '\\' && !escaped;
            if closing {
                if cut {
                    out.push('…');
                }
                out.push(q);
                break;
            }
            if kept < MAX_QUOTED {
                out.push(q);
                kept += 1;
            } else {
                cut = true;
            }
        }
        if out.chars().count() > MAX_LINE {
            break;
        }
    }
    if out.chars().count() > MAX_LINE {
        out = out.chars().take(MAX_LINE).collect();
        out.push('…');
    }
    out
}

impl std::error::Error for Error {}

/// Build an [`Error`] with `format!` syntax.
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => { $crate::error::Error::new(format!($($arg)*)) };
}

/// Add what was being done to a lower-level error.
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::new(format!("{what}: {e}")))
    }
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::new(format!("{}: {e}", what())))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| Error::new(what.to_string()))
    }
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.ok_or_else(|| Error::new(what().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_prefixes_cause_and_stays_one_line() {
        let r: std::result::Result<(), String> = Err("line1\nline2".into());
        let e = r.context("reading config.yaml").unwrap_err();
        assert_eq!(e.to_string(), "reading config.yaml: line1 line2");
        assert_eq!(e.exit_code, 1);
    }

    #[test]
    fn quoted_values_are_cut_to_an_excerpt_and_lines_stay_bounded() {
        let long = "x".repeat(10_000);
        let e = Error::new(format!("invalid type: string {long:?}, expected a map"));
        let shown = e.to_string();
        assert!(shown.starts_with(&format!("invalid type: string \"{}", "x".repeat(64))));
        assert!(shown.ends_with("…\", expected a map"), "{shown}");
        let e = Error::new(format!("bad `{long}` and \"short\" {long}"));
        let shown = e.to_string();
        assert!(shown.contains("…` and \"short\" xxx"), "{shown}");
        assert!(shown.chars().count() <= MAX_LINE + 1, "{}", shown.len());
        // Escaped quotes stay inside their value; short messages are untouched.
        let e = Error::new(r#"name "a\"b" is invalid"#);
        assert_eq!(e.to_string(), r#"name "a\"b" is invalid"#);
    }
}
