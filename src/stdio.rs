//! iii's own standard output and standard error, written without panicking.
//!
//! `println!` and `eprintln!` panic when their stream cannot take the bytes (a full disk,
//! ENOSPC; a reader that went away, EPIPE), which made `iii worker add … >/dev/full` exit 101
//! with a Rust panic after config.yaml had changed, and every error a silent 101 when stderr
//! was unwritable. So:
//! - machine output (what scripts read) goes through [`out`]: failing to write it is an error
//!   the command reports like any other (exit 1);
//! - messages go through [`say!`](crate::say): best effort, lost if stderr cannot take them.

use std::fmt;
use std::io::Write;

use crate::{err, Result};

/// Write `text` to stdout and flush it; a failure is the command's error.
pub fn out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| err!("writing to stdout: {e}"))
}

/// Write one line to stderr, ignoring failure (use [`say!`](crate::say)).
pub fn say_line(args: fmt::Arguments<'_>) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_fmt(args);
    let _ = stderr.write_all(b"\n");
}

/// `eprintln!` that never panics: one line to stderr, lost if stderr cannot take it.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::stdio::say_line(format_args!($($arg)*)) };
}
