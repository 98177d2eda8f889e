//! `skip!`: say why a test could not run here. Cargo hides what passing tests print, so the
//! reason also goes to `target/tmp/skipped.txt`, which scripts/test.sh prints after the run.
//!
//! Include it first in a test crate: `#[macro_use] #[path = "common/skip.rs"] mod skip;`
//! (the library's unit tests include it too, from `src/lib.rs`).

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
    let list = tmp_dir().join("skipped.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(list)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Cargo's `target/tmp`: named at compile time for integration tests; a unit-test binary
/// finds it from where it lives (`target/<profile>/deps/`).
fn tmp_dir() -> std::path::PathBuf {
    if let Some(d) = option_env!("CARGO_TARGET_TMPDIR") {
        return d.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let target = exe
        .ancestors()
        .nth(3)
        .unwrap_or(std::path::Path::new("target"));
    let tmp = target.join("tmp");
    let _ = std::fs::create_dir_all(&tmp);
    tmp
}
