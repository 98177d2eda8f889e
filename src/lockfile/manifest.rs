//! A worker project's own `iii.worker.yaml`: its `dependencies:` (name → version range), and
//! the hash iii.lock keeps of them (`manifest_hash`) to tell when they changed.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{err, Result};

pub const FILE: &str = "iii.worker.yaml";

/// `sha256:v1:` + the SHA-256 of `"<name>=<range>\n"` for each dependency in name order.
pub fn hash(deps: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (name, range) in deps {
        h.update(format!("{name}={range}\n").as_bytes());
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:v1:{hex}")
}

/// The `dependencies:` of the `iii.worker.yaml` in `dir`; `Ok(None)` when there is no such
/// file.
pub fn dependencies(dir: &Path) -> Result<Option<BTreeMap<String, String>>> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err!("reading {}: {e}", path.display())),
    };
    #[derive(serde::Deserialize)]
    struct Manifest {
        #[serde(default)]
        dependencies: Option<BTreeMap<String, serde_yaml::Value>>,
    }
    let m: Manifest = serde_yaml::from_str(&text)
        .map_err(|e| err!("{}: not a worker manifest: {e}", path.display()))?;
    let mut deps = BTreeMap::new();
    for (k, v) in m.dependencies.unwrap_or_default() {
        let range = match v {
            serde_yaml::Value::String(s) => s,
            serde_yaml::Value::Number(n) => n.to_string(),
            other => {
                return Err(err!(
                    "{}: dependencies.{k}: {other:?} is not a version range",
                    path.display()
                ))
            }
        };
        deps.insert(k, range);
    }
    Ok(Some(deps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_ordered() {
        // The hash of nothing is the SHA-256 of the empty string.
        assert_eq!(
            hash(&BTreeMap::new()),
            "sha256:v1:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let a = BTreeMap::from([
            ("b".to_string(), "^1".to_string()),
            ("a".to_string(), "~2".to_string()),
        ]);
        let mut h = Sha256::new();
        h.update(b"a=~2\nb=^1\n");
        let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hash(&a), format!("sha256:v1:{want}"));
    }
}
