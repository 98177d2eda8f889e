//! Registry credentials and authentication challenges.
//!
//! Credentials come from, in order:
//! 1. `III_REGISTRY_AUTH`: comma-separated `host=user:password` entries, e.g.
//!    `ghcr.io=me:ghp_xxx,localhost:5000=admin:secret`. The host is written as in the image
//!    reference (`docker.io` for Docker Hub). The password is everything after the first `:`
//!    of the entry; it cannot contain a `,`.
//! 2. Docker's `config.json` (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`):
//!    the `auths` map, base64 `auth` (`user:password`) or `username`/`password` fields.
//!    Credential helpers (`credsStore`) are not run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use base64::Engine;

use crate::{err, Context, Result};

/// A user name and password, and where they came from (for error messages).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    // Never print the password, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "user `{}` from {}", self.username, self.source)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

/// The credentials to use for `registry` (as written in the reference), if any.
pub fn credentials_for(registry: &str) -> Result<Option<Credentials>> {
    if let Some(spec) = std::env::var_os("III_REGISTRY_AUTH") {
        let spec = spec
            .into_string()
            .map_err(|_| err!("III_REGISTRY_AUTH is not valid UTF-8"))?;
        if let Some(c) = from_env_spec(&spec, registry)? {
            return Ok(Some(c));
        }
    }
    let Some(path) = docker_config_path() else {
        return Ok(None);
    };
    match std::fs::read(&path) {
        Ok(bytes) => from_docker_config(&bytes, registry)
            .with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err!("reading {}: {e}", path.display())),
    }
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".docker/config.json"))
}

/// Parse `III_REGISTRY_AUTH` and return the entry for `registry`.
pub fn from_env_spec(spec: &str, registry: &str) -> Result<Option<Credentials>> {
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (host, userpass) = entry.split_once('=').ok_or_else(|| {
            err!(
                "III_REGISTRY_AUTH entry `{}` is not host=user:password",
                redact(entry)
            )
        })?;
        let (user, pass) = userpass.split_once(':').ok_or_else(|| {
            err!("III_REGISTRY_AUTH entry for `{host}` is not host=user:password")
        })?;
        if normalise_host(host) == normalise_host(registry) {
            return Ok(Some(Credentials {
                username: user.to_string(),
                password: pass.to_string(),
                source: "III_REGISTRY_AUTH".into(),
            }));
        }
    }
    Ok(None)
}

fn redact(entry: &str) -> String {
    match entry.split_once(':') {
        Some((before, _)) => format!("{before}:…"),
        None => entry.to_string(),
    }
}

#[derive(serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(serde::Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Find `registry` in a docker `config.json`.
pub fn from_docker_config(bytes: &[u8], registry: &str) -> Result<Option<Credentials>> {
    let cfg: DockerConfig = serde_json::from_slice(bytes).context("not valid JSON")?;
    let want = normalise_host(registry);
    for (key, a) in &cfg.auths {
        if normalise_host(key) != want {
            continue;
        }
        let source = "docker config.json".to_string();
        if let Some(encoded) = a.auth.as_deref().filter(|s| !s.is_empty()) {
            let decoded = STANDARD_PAD_INDIFFERENT
                .decode(encoded)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| err!("auths.{key}.auth is not base64 of user:password"))?;
            let (u, p) = decoded
                .split_once(':')
                .ok_or_else(|| err!("auths.{key}.auth is not base64 of user:password"))?;
            return Ok(Some(Credentials {
                username: u.into(),
                password: p.into(),
                source,
            }));
        }
        if let (Some(u), Some(p)) = (&a.username, &a.password) {
            return Ok(Some(Credentials {
                username: u.clone(),
                password: p.clone(),
                source,
            }));
        }
    }
    Ok(None)
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://localhost:5000/` → `localhost:5000`.
fn normalise_host(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match k.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => k,
    }
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lower-cased: `bearer` or `basic`.
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parse `Bearer realm="https://auth",service="reg",scope="repository:x:pull"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            // Quoted string with backslash escapes.
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            (v, &quoted[end?..])
        } else {
            let stop = after.find(',').unwrap_or(after.len());
            (after[..stop].trim().to_string(), &after[stop..])
        };
        params.insert(key, value);
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_spec_entries() {
        let spec = "ghcr.io=me:tok:en, localhost:5000=admin:secret";
        let c = from_env_spec(spec, "localhost:5000").unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("admin", "secret")
        );
        let c = from_env_spec(spec, "ghcr.io").unwrap().unwrap();
        assert_eq!(c.password, "tok:en");
        assert!(from_env_spec(spec, "quay.io").unwrap().is_none());
        let e = from_env_spec("ghcr.io:me", "ghcr.io")
            .unwrap_err()
            .to_string();
        assert!(e.contains("III_REGISTRY_AUTH"), "{e}");
        let e = from_env_spec("ghcr.io=me", "ghcr.io")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("me\""), "{e}");
    }

    #[test]
    fn docker_config_auths() {
        let json = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},
                 "localhost:5000":{{"username":"u","password":"p"}}}}}}"#,
            STANDARD.encode(b"hub:pw")
        );
        let c = from_docker_config(json.as_bytes(), "docker.io")
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("hub", "pw"));
        let c = from_docker_config(json.as_bytes(), "localhost:5000")
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "u");
        assert!(from_docker_config(json.as_bytes(), "ghcr.io")
            .unwrap()
            .is_none());
        assert!(format!("{c:?}").contains('u') && !format!("{c:?}").contains("\"p\""));
    }

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/busybox:pull");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "Registry Realm");
        let c = parse_challenge("Bearer realm=http://x/t, service=s").unwrap();
        assert_eq!(c.params["realm"], "http://x/t");
        assert_eq!(c.params["service"], "s");
    }
}
