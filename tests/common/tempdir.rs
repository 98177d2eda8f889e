//! `TempDir`: a fresh directory for one test, removed with everything in it when the test ends,
//! pass or fail — read-only directories from images included, symlinks never followed.
//!
//! Include it in a test crate: `#[path = "common/tempdir.rs"] mod tempdir;`

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

#[allow(dead_code)]
impl TempDir {
    /// `<tmp>/iii-<crate>-<tag>-<pid>-<n>`: unique across parallel tests and test binaries.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "iii-{}-{tag}-{}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = iii::oci::unpack::remove_tree(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = iii::oci::unpack::remove_tree(&self.0);
    }
}
