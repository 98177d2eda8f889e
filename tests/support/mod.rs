//! Shared test harness: a real `docker-registry` (no auth, Basic, bearer tokens from an
//! in-test token issuer), an image builder and pusher speaking the distribution API, an
//! in-process fake registry for faults, and helpers to compare extracted trees.
//!
//! Each integration test file does `mod support;` and uses what it needs.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use crate::tempdir::TempDir;

pub mod fake;
pub mod image;
pub mod registry;
pub mod tree;

/// Whether the tool `name` is on PATH (tests skip with a reason when it is not).
pub fn have_tool(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
}
