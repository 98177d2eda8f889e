//! `skip!`: say why a test could not run here. Cargo hides what passing tests print, so the
//! reason also goes to `target/tmp/skipped.txt`, which scripts/test.sh prints after the run.
//!
//! Include it first in a test crate: `#[macro_use] #[path = "common/skip.rs"] mod skip;`

/// Print `SKIP: <test>: <reason>` to stderr and append it to the run's skip list.
#[allow(unused_macros)]
macro_rules! skip {
    ($($arg:tt)*) => {
        $crate::skip::record(&format!($($arg)*))
    };
}

#[allow(dead_code)]
pub fn record(why: &str) {
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let line = format!("{}::{test}: {why}", env!("CARGO_CRATE_NAME"));
    eprintln!("SKIP: {line}");
    let list = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(list)
    {
        let _ = writeln!(f, "{line}");
    }
}
