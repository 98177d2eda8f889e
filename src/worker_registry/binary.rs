//! Binary workers: a `.tar.gz` per target triple, fetched over HTTPS from public hosts only,
//! verified against the registry's SHA-256, and the entry named after the worker installed
//! into the store as a minimal root filesystem for a sandbox — the binary at `/bin/<name>`,
//! the shared libraries it links (when it is dynamic) at their paths, `/etc/passwd`,
//! `/etc/group`, `/tmp` and `/workspace`. Binary workers never run as bare host processes.
//!
//! Store layout: `<III_HOME>/binaries/<tarball sha256>/rootfs/`, built in a temporary
//! directory and renamed into place, so an interrupted install leaves nothing half-made.
//!
//! `III_ALLOW_PRIVATE_DOWNLOADS=1` lets downloads reach loopback and private addresses (for
//! tests against a local server); HTTPS is required regardless.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::lockfile::{sha256_value, Artifact};
use crate::{err, Context, Result};

/// The largest artifact (and binary) accepted.
pub const MAX_SIZE: u64 = 512 << 20;
const MAX_REDIRECTS: usize = 10;

/// This host's target triple, as the registry names artifacts.
pub fn host_target() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "aarch64-unknown-linux-gnu"
    } else {
        "x86_64-unknown-linux-gnu"
    }
}

fn private_allowed() -> bool {
    std::env::var("III_ALLOW_PRIVATE_DOWNLOADS").is_ok_and(|v| v == "1")
}

/// Whether `ip` is on the public internet (not loopback, private, link-local, shared,
/// documentation, multicast, broadcast or reserved).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => public_v4(v),
        IpAddr::V6(v) => {
            if let Some(v4) = v.to_ipv4_mapped() {
                return public_v4(v4);
            }
            let s = v.segments();
            !(v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

fn public_v4(v: Ipv4Addr) -> bool {
    let o = v.octets();
    !(v.is_private()
        || v.is_loopback()
        || v.is_link_local()
        || v.is_broadcast()
        || v.is_documentation()
        || v.is_unspecified()
        || v.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || o[0] >= 240)
}

/// Refuse a download URL that is not HTTPS or whose host is not public.
pub fn check_url(url: &str) -> Result<()> {
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(err!(
            "binary download {url:?}: only HTTPS URLs are downloaded"
        ));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if authority.is_empty() {
        return Err(err!("binary download {url:?}: no host"));
    }
    if private_allowed() {
        return Ok(());
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, p) = v6.split_once(']').unwrap_or((v6, ""));
            (
                h,
                p.strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(443),
            )
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().unwrap_or(443)),
            None => (authority, 443),
        },
    };
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => (host, port)
            .to_socket_addrs()
            .with_context(|| format!("binary download {url:?}: resolving {host}"))?
            .map(|a| a.ip())
            .collect(),
    };
    if let Some(bad) = addrs.iter().find(|a| !is_public(**a)) {
        let what = if host == bad.to_string() {
            host.to_string()
        } else {
            format!("{host} is {bad}, which")
        };
        return Err(err!(
            "binary download {url:?}: {what} is not a public address; downloads go to public hosts only"
        ));
    }
    Ok(())
}

/// Fetch `url` (following at most ten redirects, each checked like the first) into `dest`,
/// verifying `sha256` on the way; the SHA-256 it has.
pub fn fetch(url: &str, sha256: &str, dest: &Path) -> Result<()> {
    let want = sha256_value(sha256);
    let mut current = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        check_url(&current)?;
        let host = current
            .trim_start_matches("https://")
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        let agent: ureq::Agent = crate::oci::registry::transport::agent_for(&host);
        let mut resp = agent
            .get(&current)
            .config()
            .max_redirects(0)
            .build()
            .call()
            .map_err(|e| err!("downloading {current}: {e}"))?;
        let status = resp.status().as_u16();
        if (300..400).contains(&status) {
            let loc = resp
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| err!("downloading {current}: HTTP {status} without a Location"))?;
            current = if loc.starts_with("https://") || loc.starts_with("http://") {
                loc.to_string()
            } else if loc.starts_with('/') {
                format!("https://{host}{loc}")
            } else {
                return Err(err!(
                    "downloading {current}: relative redirect {loc:?} not followed"
                ));
            };
            continue;
        }
        if !(200..300).contains(&status) {
            return Err(err!("downloading {current}: HTTP {status}"));
        }
        let mut f =
            std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
        let mut hasher = Sha256::new();
        let mut reader = resp.body_mut().as_reader().take(MAX_SIZE + 1);
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| err!("downloading {current}: {e}"))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > MAX_SIZE {
                return Err(err!(
                    "downloading {current}: larger than {} MiB; refusing it",
                    MAX_SIZE >> 20
                ));
            }
            hasher.update(&buf[..n]);
            f.write_all(&buf[..n])
                .with_context(|| format!("writing {}", dest.display()))?;
        }
        f.sync_all().ok();
        let got: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if got != want {
            return Err(err!(
                "downloading {url}: sha256 mismatch: expected {want}, the download hashes to {got}"
            ));
        }
        return Ok(());
    }
    Err(err!(
        "downloading {url}: more than {MAX_REDIRECTS} redirects"
    ))
}

/// The entry of the `.tar.gz` at `archive` whose file name is `name`, as bytes. Errors name
/// the archive as `label` (its URL: the file itself is a temporary).
pub fn extract(archive: &Path, name: &str, label: &str) -> Result<Vec<u8>> {
    let f = std::fs::File::open(archive).with_context(|| format!("opening {label}"))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let entries = tar
        .entries()
        .with_context(|| format!("{}: not a tar.gz", label))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("{}: corrupt archive", label))?;
        let path = entry
            .path()
            .with_context(|| format!("{}: bad entry name", label))?
            .into_owned();
        if path.file_name().and_then(|n| n.to_str()) != Some(name) {
            continue;
        }
        let escapes = path.components().any(|c| {
            matches!(
                c,
                std::path::Component::ParentDir
                    | std::path::Component::RootDir
                    | std::path::Component::Prefix(_)
            )
        });
        if escapes {
            return Err(err!(
                "{}: entry {} would land outside the install directory",
                label,
                path.display()
            ));
        }
        if !entry.header().entry_type().is_file() {
            return Err(err!(
                "{}: entry {} is not a regular file",
                label,
                path.display()
            ));
        }
        let mut bytes = Vec::new();
        (&mut entry)
            .take(MAX_SIZE + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("{}: reading {}", label, path.display()))?;
        if bytes.len() as u64 > MAX_SIZE {
            return Err(err!("{}: {} is too large", label, path.display()));
        }
        return Ok(bytes);
    }
    Err(err!(
        "{}: no entry named {name:?} (a binary worker's archive holds a file named after the worker)",
        label
    ))
}

/// Where binaries live in the store at `home`.
pub fn binaries_dir(home: &Path) -> PathBuf {
    home.join("binaries")
}

/// The root filesystem of an installed artifact (whose tarball hashes to `sha256`).
pub fn rootfs_of(home: &Path, sha256: &str) -> PathBuf {
    binaries_dir(home).join(sha256_value(sha256)).join("rootfs")
}

/// The shared libraries a dynamic executable links, per the system's `ldd` (none for a
/// static one, or where there is no `ldd`).
fn linked_libraries(binary: &Path) -> Vec<PathBuf> {
    let Ok(out) = std::process::Command::new("ldd").arg(binary).output() else {
        return vec![];
    };
    if !out.status.success() {
        return vec![];
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux… (0x…)"
            let path = match l.split_once("=>") {
                Some((_, r)) => r.trim(),
                None => l.trim(),
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Install the worker `name` from `artifact` (download, verify, extract, build its root
/// filesystem) unless it is installed already; its root filesystem. `said` tells what it did.
pub fn install(
    home: &Path,
    name: &str,
    artifact: &Artifact,
    said: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    let sha = sha256_value(&artifact.sha256);
    let root = rootfs_of(home, &sha);
    if root.join("bin").join(name).is_file() {
        return Ok(root);
    }
    check_url(&artifact.url)?;
    let dir = binaries_dir(home);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".tmp-{sha}-{}-{nanos}", std::process::id()));
    let result = (|| {
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let archive = tmp.join("artifact.tar.gz");
        said(&format!("{name}: downloading {}", artifact.url));
        fetch(&artifact.url, &artifact.sha256, &archive)?;
        let bytes = extract(&archive, name, &artifact.url)?;
        std::fs::remove_file(&archive).ok();
        let rootfs = tmp.join("rootfs");
        // Mount points the sandboxes' init expects in any root (an image has them).
        for d in ["bin", "etc", "workspace", "proc", "dev", "sys", "run"] {
            std::fs::create_dir_all(rootfs.join(d))
                .with_context(|| format!("creating {}", rootfs.join(d).display()))?;
        }
        let bin = rootfs.join("bin").join(name);
        std::fs::write(&bin, &bytes).with_context(|| format!("writing {}", bin.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", bin.display()))?;
        let tmpdir = rootfs.join("tmp");
        std::fs::create_dir_all(&tmpdir).ok();
        std::fs::set_permissions(&tmpdir, std::fs::Permissions::from_mode(0o1777)).ok();
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        .context("writing etc/passwd")?;
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")
            .context("writing etc/group")?;
        for lib in linked_libraries(&bin) {
            let rel = lib.strip_prefix("/").unwrap_or(&lib);
            let dest = rootfs.join(rel);
            if let Some(p) = dest.parent() {
                std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
            }
            std::fs::copy(&lib, &dest)
                .with_context(|| format!("copying {} (a library {name} links)", lib.display()))?;
        }
        let final_dir = dir.join(&sha);
        match std::fs::rename(&tmp, &final_dir) {
            Ok(()) => Ok(()),
            // Another install of the same artifact finished first: theirs is as good.
            Err(_) if final_dir.join("rootfs/bin").join(name).is_file() => Ok(()),
            Err(e) => Err(err!("installing into {}: {e}", final_dir.display())),
        }
    })();
    if tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|()| root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_https() {
        assert!(is_public("93.184.216.34".parse().unwrap()));
        for private in [
            "10.1.2.3",
            "127.0.0.1",
            "169.254.169.254",
            "192.168.0.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "0.1.2.3",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        if !private_allowed() {
            assert!(check_url("http://93.184.216.34/x.tar.gz")
                .unwrap_err()
                .to_string()
                .contains("HTTPS"));
            assert!(check_url("https://127.0.0.1/x.tar.gz")
                .unwrap_err()
                .to_string()
                .contains("public"));
            assert!(check_url("https://[::1]:8443/x").is_err());
            assert!(check_url("https://user@10.0.0.1/x").is_err());
            check_url("https://93.184.216.34/x.tar.gz").unwrap();
        }
    }

    fn tarball(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_entry_type(tar::EntryType::Regular);
            // Raw name bytes: tar's own path setter refuses `..`, which hostile archives carry.
            let name = path.as_bytes();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn extracts_the_named_entry_only_from_inside() {
        let dir = std::env::temp_dir().join(format!("iii-binx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.tar.gz");
        std::fs::write(
            &a,
            tarball(&[("README", b"hi"), ("dist/pdfkit", b"\x7fELF...")]),
        )
        .unwrap();
        assert_eq!(extract(&a, "pdfkit", "a.tar.gz").unwrap(), b"\x7fELF...");
        assert!(extract(&a, "other", "a.tar.gz")
            .unwrap_err()
            .to_string()
            .contains("no entry named"));
        std::fs::write(&a, tarball(&[("../../pdfkit", b"evil")])).unwrap();
        assert!(extract(&a, "pdfkit", "a.tar.gz")
            .unwrap_err()
            .to_string()
            .contains("outside"));
        std::fs::write(&a, b"not gzip").unwrap();
        assert!(extract(&a, "pdfkit", "a.tar.gz").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
