//! Shared test harness: a real `docker-registry` (no auth, Basic, bearer tokens from an
//! in-test token issuer), an image builder and pusher speaking the distribution API, an
//! in-process fake registry for faults, and helpers to compare extracted trees.
//!
//! Each integration test file does `mod support;` and uses what it needs.
#![allow(dead_code)]

pub mod fake;
pub mod image;
pub mod registry;
pub mod tree;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A temporary directory removed (with everything in it) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "iii-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Images may contain read-only directories: make everything writable first.
        if std::fs::remove_dir_all(&self.0).is_err() {
            let _ = std::process::Command::new("chmod")
                .args(["-R", "u+rwX"])
                .arg(&self.0)
                .status();
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Whether the tool `name` is on PATH (tests skip with a reason when it is not).
pub fn have_tool(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
}
