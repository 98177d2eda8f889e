//! Image references (`ghcr.io/org/name:tag@sha256:…`), normalised the way docker does.

use std::fmt;

use super::digest::Digest;
use crate::{err, Result};

/// Docker Hub's name in references, and the host its API actually lives on.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry as written (normalised for Docker Hub): `docker.io`, `localhost:5000`, `ghcr.io`.
    pub registry: String,
    /// Repository path inside the registry: `library/busybox`, `org/name`.
    pub repository: String,
    /// The tag, if one was given. With neither tag nor digest, `latest` is implied.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parse `s` as docker would, except that a bare word (no `/`, `:` or `.`) is the
    /// iii-registry shorthand, which this version cannot resolve yet.
    pub fn parse(s: &str) -> Result<Reference> {
        if s.is_empty() {
            return Err(err!("empty image reference"));
        }
        if s.trim() != s || s.chars().any(char::is_whitespace) {
            return Err(err!("invalid image reference `{s}`: contains whitespace"));
        }
        let (rest, digest) = match s.rsplit_once('@') {
            Some((rest, d)) => {
                let is_bare = !rest.contains(['/', ':', '.']);
                if is_bare && !d.starts_with("sha256:") {
                    return Err(shorthand_error(s));
                }
                let digest = Digest::parse(d)
                    .map_err(|e| err!("invalid image reference `{s}`: {}", e.message()))?;
                (rest, Some(digest))
            }
            None => {
                if !s.contains(['/', ':', '.']) {
                    return Err(shorthand_error(s));
                }
                (s, None)
            }
        };
        // The tag is after the last `:` that follows the last `/` (a `:` before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(err!(
                    "invalid image reference `{s}`: bad tag `{t}` (letters, digits, `_`, `.`, `-`; at most 128)"
                ));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        if !valid_registry(&registry) {
            return Err(err!(
                "invalid image reference `{s}`: bad registry `{registry}`"
            ));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.len() > 255 || !repository.split('/').all(valid_path_component) {
            return Err(err!(
                "invalid image reference `{s}`: bad repository `{repository}` (lowercase letters, digits and separators `.`, `_`, `__`, `-`)"
            ));
        }
        Ok(Reference {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// Host (and port) that serves the registry API.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What to ask `/v2/<repo>/manifests/…` for: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The last path component of the repository: the default worker name.
    pub fn short_name(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }
}

/// Whether two references name the same repository of the same registry (tags and digests
/// aside); `false` when either does not parse.
pub fn same_repository(a: &str, b: &str) -> bool {
    match (Reference::parse(a), Reference::parse(b)) {
        (Ok(a), Ok(b)) => a.registry == b.registry && a.repository == b.repository,
        _ => false,
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => write!(f, ":{t}@{d}"),
            (Some(t), None) => write!(f, ":{t}"),
            (None, Some(d)) => write!(f, "@{d}"),
            (None, None) => write!(f, ":latest"),
        }
    }
}

fn shorthand_error(s: &str) -> crate::Error {
    let word = s.split('@').next().unwrap_or(s);
    err!(
        "image `{s}` is an iii-registry shorthand, which is not supported yet; \
         give a full reference such as docker.io/library/{word}:latest or ghcr.io/ORG/{word}:TAG"
    )
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// One `/`-separated part of a repository: `[a-z0-9]+` runs joined by `.`, `_`, `__` or `-`+.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.strip_prefix('[') {
        // `[IPv6]` or `[IPv6]:port`
        Some(rest) => match rest.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return false,
            },
            None => return false,
        },
        None => match r.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        },
    };
    let port_ok = match port {
        None => true,
        Some(p) => !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()),
    };
    port_ok
        && !host.is_empty()
        && !host.starts_with(['-', '.'])
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_names_are_normalised() {
        let r = p("library/busybox");
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.manifest_ref(), "latest");
        assert_eq!(p("docker.io/busybox").repository, "library/busybox");
        assert_eq!(
            p("index.docker.io/busybox:1").to_string(),
            "docker.io/library/busybox:1"
        );
        assert_eq!(
            p("busybox:1.36").to_string(),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            p("someone/tool").to_string(),
            "docker.io/someone/tool:latest"
        );
        assert_eq!(p("busybox:1.36").short_name(), "busybox");
    }

    #[test]
    fn explicit_registries() {
        let r = p("localhost:5000/x");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("localhost:5000", "x")
        );
        assert_eq!(r.api_host(), "localhost:5000");
        let r = p("ghcr.io/o/n:tag");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("ghcr.io", "o/n")
        );
        assert_eq!(r.tag.as_deref(), Some("tag"));
        let r = p("localhost/a/b/c");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("localhost", "a/b/c")
        );
        let r = p("127.0.0.1:5000/w:1.0");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.short_name(), "w");
        let r = p("[::1]:5000/w");
        assert_eq!(r.registry, "[::1]:5000");
    }

    #[test]
    fn digests_and_tags() {
        let r = p(&format!("busybox@{D}"));
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.manifest_ref(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        let r = p(&format!("ghcr.io/o/n:1.0@{D}"));
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.manifest_ref(), D, "the digest wins over the tag");
        assert_eq!(r.to_string(), format!("ghcr.io/o/n:1.0@{D}"));
        let r = p(&format!("localhost:5000/x@{D}"));
        assert_eq!(r.tag, None);
    }

    #[test]
    fn bare_words_are_iii_shorthand() {
        for s in ["busybox", "image-resize", "image-resize@1.0.0"] {
            let e = Reference::parse(s).unwrap_err().to_string();
            assert!(e.contains("not supported yet") && e.contains(s), "{s}: {e}");
        }
    }

    #[test]
    fn invalid_references() {
        for s in [
            "",
            " busybox:1",
            "library/BusyBox",
            "ghcr.io/Org/n",
            "ghcr.io/o/n:",
            "ghcr.io/o/n:-bad",
            "ghcr.io/o//n",
            "ghcr.io/o/n-",
            "ghcr.io/o/n@sha256:1234",
            "ghcr.io/o/n@md5:d41d8cd98f00b204e9800998ecf8427e",
            "localhost:port/x",
            "ghcr.io/o/n:a b",
            "ghcr.io/o/n:has/slash",
        ] {
            assert!(
                Reference::parse(s).is_err(),
                "`{s}` accepted: {:?}",
                Reference::parse(s)
            );
        }
        let long_tag = format!("ghcr.io/o/n:{}", "a".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
    }
}
