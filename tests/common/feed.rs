//! `output_with_stdin`: run a command with `stdin` fed from a thread while its output is
//! collected (feeding first could deadlock on a full pipe).
//!
//! Include it in a test crate: `#[path = "common/feed.rs"] mod feed;`

use std::io::Write;
use std::process::{Command, Output, Stdio};

pub fn output_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // A command that exits without reading all of stdin is not an error here.
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}
