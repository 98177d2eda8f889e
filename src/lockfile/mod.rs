//! `iii.lock`: the pins of a project's workers, beside its config.yaml, in the format other
//! iii tools read and write too — so a project committed with either works with the other.
//!
//! ```yaml
//! version: 1
//! workers:
//!   image-resize:
//!     version: 1.0.0
//!     type: image                      # binary | image | engine | bundle
//!     dependencies: {}
//!     source:
//!       kind: image
//!       image: ghcr.io/iii-hq/image-resize@sha256:…
//!   pdfkit:
//!     version: 1.2.0
//!     type: binary
//!     dependencies: {image-resize: ^1.0}
//!     source:
//!       kind: binary
//!       artifacts:
//!         x86_64-unknown-linux-gnu: {url: https://…/pdfkit.tar.gz, sha256: …}
//! ```
//!
//! Read with validation (errors name the file, the worker and the field); written atomically
//! (temp file, fsync, rename) with keys sorted, so the same pins always give the same bytes.
//! Beside the registry's workers, `iii worker add` of an OCI reference pins it too (`type:
//! image` with the manifest digest it resolved to), so a moved tag cannot change what a later
//! `sync` installs.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{err, Context, Result};

pub mod check;
pub mod manifest;

/// The lock file's name, beside config.yaml.
pub const FILE: &str = "iii.lock";

/// The parsed lock file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Lock {
    pub version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared_dependencies: Option<BTreeMap<String, String>>,
    pub workers: BTreeMap<String, Locked>,
}

/// One pinned worker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Locked {
    pub version: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub dependencies: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Binary,
    Image,
    Engine,
    Bundle,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Binary => "binary",
            Kind::Image => "image",
            Kind::Engine => "engine",
            Kind::Bundle => "bundle",
        }
    }
}

/// A downloadable binary for one target triple.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub url: String,
    pub sha256: String,
}

/// Where a pinned worker comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    Binary {
        artifacts: BTreeMap<String, Artifact>,
    },
    Image {
        image: String,
    },
    Bundle {
        archive_url: String,
        sha256: String,
    },
}

// --- raw shapes (validated into the types above) ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLock {
    version: Option<serde_yaml::Value>,
    #[serde(default)]
    manifest_hash: Option<String>,
    #[serde(default)]
    declared_dependencies: Option<BTreeMap<String, String>>,
    #[serde(default)]
    workers: Option<BTreeMap<String, RawLocked>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocked {
    version: Option<serde_yaml::Value>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    dependencies: Option<BTreeMap<String, String>>,
    #[serde(default)]
    source: Option<RawSource>,
}

/// Every field any source kind has (the legacy binary shape `{target, url, sha256}` too).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: Option<String>,
    #[serde(default)]
    artifacts: Option<BTreeMap<String, Artifact>>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    archive_url: Option<String>,
}

/// At most 64 characters of a value quoted in an error.
fn short(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// 64 lower-case hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The first whitespace-separated token of an expected sha256 (`sha256sum` lines are
/// accepted), lower-cased.
pub fn sha256_value(s: &str) -> String {
    s.split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn scalar_string(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn check_range(range: &str) -> std::result::Result<(), String> {
    if range.trim().is_empty() {
        return Err("empty version range".into());
    }
    if range.trim() == "*" || range.trim() == "latest" {
        return Ok(());
    }
    semver::VersionReq::parse(range)
        .map(|_| ())
        .map_err(|e| format!("{range:?} is not a version range: {e}"))
}

impl Source {
    fn validate(&self, kind: Kind) -> std::result::Result<(), String> {
        match (kind, self) {
            (Kind::Binary, Source::Binary { artifacts }) => {
                if artifacts.is_empty() {
                    return Err("source.artifacts: a binary needs at least one artifact".into());
                }
                for (target, a) in artifacts {
                    if target.trim().is_empty() || a.url.trim().is_empty() {
                        return Err(format!("source.artifacts.{target}: empty target or url"));
                    }
                    if !is_sha256_hex(&sha256_value(&a.sha256)) {
                        return Err(format!(
                            "source.artifacts.{target}.sha256: {:?} is not 64 hex digits",
                            short(&a.sha256)
                        ));
                    }
                }
                Ok(())
            }
            (Kind::Image, Source::Image { image }) => {
                let Some((_, digest)) = image.split_once("@sha256:") else {
                    return Err(format!(
                        "source.image: {:?} is not pinned to a digest (…@sha256:<hex>)",
                        short(image)
                    ));
                };
                if !is_sha256_hex(digest) {
                    return Err(format!(
                        "source.image: the digest {:?} is not 64 hex digits",
                        short(digest)
                    ));
                }
                Ok(())
            }
            (
                Kind::Bundle,
                Source::Bundle {
                    archive_url,
                    sha256,
                },
            ) => {
                if archive_url.trim().is_empty() || !is_sha256_hex(&sha256_value(sha256)) {
                    return Err("source: a bundle needs archive_url and a 64-hex sha256".into());
                }
                Ok(())
            }
            (k, _) => Err(format!("source.kind does not match type {}", k.as_str())),
        }
    }
}

fn source_of(raw: RawSource) -> std::result::Result<Source, String> {
    let kind = raw.kind.ok_or("source.kind is missing")?;
    Ok(match kind.as_str() {
        "binary" => match (raw.artifacts, raw.target, raw.url, raw.sha256) {
            (Some(artifacts), None, None, None) => Source::Binary { artifacts },
            // The older one-target shape.
            (None, Some(target), Some(url), Some(sha256)) => Source::Binary {
                artifacts: BTreeMap::from([(target, Artifact { url, sha256 })]),
            },
            _ => return Err("source: a binary has artifacts (or target, url and sha256)".into()),
        },
        "image" => Source::Image {
            image: raw.image.ok_or("source.image is missing")?,
        },
        "bundle" => Source::Bundle {
            archive_url: raw.archive_url.ok_or("source.archive_url is missing")?,
            sha256: raw.sha256.ok_or("source.sha256 is missing")?,
        },
        other => {
            return Err(format!(
                "source.kind {:?} is not one of binary, image, bundle",
                short(other)
            ))
        }
    })
}

fn locked_of(name: &str, raw: RawLocked) -> std::result::Result<Locked, String> {
    crate::config::validate_name(name)?;
    let version = raw
        .version
        .as_ref()
        .and_then(scalar_string)
        .filter(|v| !v.trim().is_empty())
        .ok_or("version is missing")?;
    let kind = match raw.kind.as_deref() {
        Some("binary") => Kind::Binary,
        Some("image") => Kind::Image,
        Some("engine") => Kind::Engine,
        Some("bundle") => Kind::Bundle,
        Some(other) => {
            return Err(format!(
                "type {:?} is not one of binary, image, engine, bundle",
                short(other)
            ))
        }
        None => return Err("type is missing".into()),
    };
    let dependencies = raw.dependencies.unwrap_or_default();
    for (dep, range) in &dependencies {
        crate::config::validate_name(dep).map_err(|e| format!("dependencies: {e}"))?;
        check_range(range).map_err(|e| format!("dependencies.{dep}: {e}"))?;
    }
    let source = match (kind, raw.source) {
        (Kind::Engine, None) => None,
        (Kind::Engine, Some(_)) => return Err("an engine worker has no source".into()),
        (_, None) => return Err("source is missing".into()),
        (k, Some(s)) => {
            let s = source_of(s)?;
            s.validate(k)?;
            Some(s)
        }
    };
    Ok(Locked {
        version,
        kind,
        dependencies,
        source,
    })
}

impl Lock {
    pub fn new() -> Lock {
        Lock {
            version: 1,
            ..Default::default()
        }
    }

    /// The lock file of the project whose config.yaml is `config_path`.
    pub fn path_for(config_path: &Path) -> PathBuf {
        match config_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.join(FILE),
            _ => PathBuf::from(FILE),
        }
    }

    /// Read and validate `path`; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Lock>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Lock::parse(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err!("reading {}: {e}", path.display())),
        }
    }

    /// Parse the text of a lock file; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Lock> {
        let raw: RawLock = serde_yaml::from_str(text).map_err(|e| match e.location() {
            Some(l) => err!(
                "{}:{}:{}: {}",
                path.display(),
                l.line(),
                l.column(),
                short(&e.to_string())
            ),
            None => err!("{}: {}", path.display(), short(&e.to_string())),
        })?;
        let at = |what: String| err!("{}: {what}", path.display());
        match raw.version.as_ref().and_then(|v| v.as_u64()) {
            Some(1) => {}
            Some(v) => {
                return Err(at(format!(
                    "version {v} is not supported (this iii reads version 1)"
                )))
            }
            None => return Err(at("version is missing (expected `version: 1`)".into())),
        }
        if let Some(h) = &raw.manifest_hash {
            let ok = h.strip_prefix("sha256:v1:").is_some_and(is_sha256_hex);
            if !ok {
                return Err(at(format!(
                    "manifest_hash {:?} is not sha256:v1:<64 hex>",
                    short(h)
                )));
            }
        }
        if let Some(d) = &raw.declared_dependencies {
            if raw.manifest_hash.is_none() {
                return Err(at("declared_dependencies needs manifest_hash".into()));
            }
            for (name, range) in d {
                crate::config::validate_name(name)
                    .and_then(|_| check_range(range))
                    .map_err(|e| at(format!("declared_dependencies.{name}: {e}")))?;
            }
            if Some(manifest::hash(d)) != raw.manifest_hash {
                return Err(at(
                    "manifest_hash does not match declared_dependencies".into()
                ));
            }
        }
        let mut workers = BTreeMap::new();
        for (name, w) in raw.workers.unwrap_or_default() {
            let l = locked_of(&name, w).map_err(|e| at(format!("worker {}: {e}", short(&name))))?;
            workers.insert(name, l);
        }
        Ok(Lock {
            version: 1,
            manifest_hash: raw.manifest_hash,
            declared_dependencies: raw.declared_dependencies,
            workers,
        })
    }

    /// The file's text (no leading `---`, keys sorted).
    pub fn to_text(&self) -> String {
        let text = serde_yaml::to_string(self).expect("a lock always serializes");
        text.strip_prefix("---\n").unwrap_or(&text).to_string()
    }

    /// Write to `path` atomically (temp file in the same directory, fsync, rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        // What this writes must read back: refuse to write a lock no tool could load.
        Lock::parse(&self.to_text(), path)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = dir.join(format!(".{FILE}.tmp.{}.{nanos}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            f.write_all(self.to_text().as_bytes())
                .and_then(|_| f.sync_all())
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Lock> {
        Lock::parse(t, Path::new("iii.lock"))
    }

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn reads_and_writes_the_reference_format() {
        let text = format!(
            "version: 1\nworkers:\n  pdfkit:\n    version: 1.2.0\n    type: binary\n    dependencies:\n      image-resize: ^1.0\n    source:\n      kind: binary\n      artifacts:\n        x86_64-unknown-linux-gnu:\n          url: https://example.com/pdfkit.tar.gz\n          sha256: {DIGEST}\n  image-resize:\n    version: 1.0.0\n    type: image\n    source:\n      kind: image\n      image: ghcr.io/iii-hq/image-resize@sha256:{DIGEST}\n  iii-http:\n    version: 0.1.0\n    type: engine\n"
        );
        let lock = parse(&text).unwrap();
        assert_eq!(lock.workers.len(), 3);
        assert_eq!(lock.workers["iii-http"].kind, Kind::Engine);
        assert!(lock.workers["image-resize"].dependencies.is_empty());
        // Written back: keys sorted, dependencies always present, no leading ---.
        let out = lock.to_text();
        assert!(
            out.starts_with("version: 1\nworkers:\n  iii-http:\n"),
            "{out}"
        );
        assert_eq!(parse(&out).unwrap(), lock);
        assert_eq!(parse(&out).unwrap().to_text(), out, "stable bytes");
    }

    #[test]
    fn the_older_binary_shape_is_read_as_artifacts() {
        let lock = parse(&format!(
            "version: 1\nworkers:\n  w:\n    version: '1'\n    type: binary\n    source: {{kind: binary, target: x86_64-unknown-linux-gnu, url: 'https://e/w.tar.gz', sha256: {DIGEST}}}\n"
        ))
        .unwrap();
        let Some(Source::Binary { artifacts }) = &lock.workers["w"].source else {
            panic!()
        };
        assert!(artifacts.contains_key("x86_64-unknown-linux-gnu"));
        assert!(lock.to_text().contains("artifacts:"));
    }

    #[test]
    fn bad_locks_name_the_file_the_worker_and_the_field() {
        for (text, needle) in [
            ("version: 2\nworkers: {}\n", "version 2 is not supported"),
            ("workers: {}\n", "version is missing"),
            ("version: 1\nworkers:\n  w: {version: '1', type: image, source: {kind: image, image: 'x/y:1'}}\n", "worker w: source.image"),
            ("version: 1\nworkers:\n  w: {version: '1', type: image, source: {kind: image, image: 'x/y@sha256:abc'}}\n", "not 64 hex"),
            ("version: 1\nworkers:\n  w: {version: '1', type: plugin}\n", "type \"plugin\""),
            ("version: 1\nworkers:\n  w: {version: '1', type: engine, source: {kind: image, image: x}}\n", "no source"),
            ("version: 1\nworkers:\n  W: {version: '1', type: engine}\n", "invalid worker name"),
            ("version: 1\nworkers:\n  w: {version: '1', type: binary, source: {kind: binary, artifacts: {t: {url: u, sha256: nothex}}}}\n", "sha256"),
            ("version: 1\nworkers:\n  w: {version: '1', type: engine, dependencies: {x: '>>1'}}\n", "dependencies.x"),
            ("version: 1\nmanifest_hash: sha256:v1:nope\nworkers: {}\n", "manifest_hash"),
            ("version: [1\n", "iii.lock:"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with("iii.lock") && e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn writes_atomically_and_refuses_an_invalid_lock() {
        let dir = std::env::temp_dir().join(format!("iii-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE);
        let mut lock = Lock::new();
        lock.workers.insert(
            "w".into(),
            Locked {
                version: "1".into(),
                kind: Kind::Image,
                dependencies: BTreeMap::new(),
                source: Some(Source::Image {
                    image: format!("r/w@sha256:{DIGEST}"),
                }),
            },
        );
        lock.write(&path).unwrap();
        assert_eq!(Lock::load(&path).unwrap().unwrap(), lock);
        lock.workers.get_mut("w").unwrap().source = Some(Source::Image {
            image: "r/w:1".into(),
        });
        assert!(lock.write(&path).is_err());
        assert!(
            Lock::load(&path)
                .unwrap()
                .unwrap()
                .to_text()
                .contains("@sha256:"),
            "unchanged"
        );
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp files left: {names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
