//! Building test images in memory (layers from entries, compressed as asked, OCI or Docker
//! media types, indexes) and pushing them with the distribution API.

use std::io::Read;

use iii::oci::digest::Digest;

use super::registry::PushTarget;

/// One entry of a layer tar.
#[derive(Debug, Clone)]
pub enum Entry {
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
    /// `dir/.wh.name`: deletes `dir/name` from lower layers.
    Whiteout {
        path: String,
    },
    /// `dir/.wh..wh..opq`: hides everything lower layers put in `dir`.
    Opaque {
        dir: String,
    },
}

pub fn file(path: &str, data: &[u8]) -> Entry {
    file_mode(path, data, 0o644)
}

pub fn file_mode(path: &str, data: &[u8], mode: u32) -> Entry {
    Entry::File {
        path: path.into(),
        data: data.to_vec(),
        mode,
        uid: 0,
        gid: 0,
    }
}

pub fn file_owned(path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Entry {
    Entry::File {
        path: path.into(),
        data: data.to_vec(),
        mode,
        uid,
        gid,
    }
}

pub fn dir(path: &str) -> Entry {
    Entry::Dir {
        path: path.into(),
        mode: 0o755,
    }
}

pub fn symlink(path: &str, target: &str) -> Entry {
    Entry::Symlink {
        path: path.into(),
        target: target.into(),
    }
}

pub fn hardlink(path: &str, target: &str) -> Entry {
    Entry::Hardlink {
        path: path.into(),
        target: target.into(),
    }
}

pub fn whiteout(path: &str) -> Entry {
    Entry::Whiteout { path: path.into() }
}

pub fn opaque(dir: &str) -> Entry {
    Entry::Opaque { dir: dir.into() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Oci,
    Docker,
    /// OCI content with no `mediaType` in the manifest (older tools write these).
    OciNoMediaType,
}

/// A tar archive of `entries` (GNU long-name records for paths over 100 bytes).
pub fn tar_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Complete);
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::File {
                path,
                data,
                mode,
                uid,
                gid,
            } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, &data[..]).unwrap();
            }
            Entry::Dir { path, mode } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
            Entry::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target).unwrap();
            }
            Entry::Hardlink { path, target } => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, path, target).unwrap();
            }
            Entry::Whiteout { path } => {
                let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
                let wh = if parent.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{parent}/.wh.{name}")
                };
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_data(&mut h, wh, std::io::empty()).unwrap();
            }
            Entry::Opaque { dir } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_data(&mut h, format!("{dir}/.wh..wh..opq"), std::io::empty())
                    .unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn compress(data: &[u8], c: Comp) -> Vec<u8> {
    match c {
        Comp::None => data.to_vec(),
        Comp::Gzip => {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Comp::Zstd => {
            ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
        }
    }
}

/// A layer: its entries and how it is compressed.
#[derive(Debug, Clone)]
pub struct Layer {
    pub entries: Vec<Entry>,
    pub comp: Comp,
    /// Leave out the two zero blocks that end a tar archive (some tools do).
    pub no_eof_blocks: bool,
}

impl Layer {
    pub fn new(comp: Comp, entries: Vec<Entry>) -> Layer {
        Layer {
            entries,
            comp,
            no_eof_blocks: false,
        }
    }

    pub fn without_eof_blocks(mut self) -> Layer {
        self.no_eof_blocks = true;
        self
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> Vec<u8> {
        let mut t = tar_bytes(&self.entries);
        if self.no_eof_blocks {
            assert!(t.ends_with(&[0u8; 1024]));
            t.truncate(t.len() - 1024);
        }
        t
    }

    /// The blob: compressed tar.
    pub fn blob(&self) -> Vec<u8> {
        compress(&self.tar(), self.comp)
    }

    fn media_type(&self, f: Format) -> &'static str {
        match (f, self.comp) {
            (Format::Docker, Comp::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            (Format::Docker, Comp::None) => "application/vnd.docker.image.rootfs.diff.tar",
            (Format::Docker, Comp::Zstd) => "application/vnd.docker.image.rootfs.diff.tar.zstd",
            (_, Comp::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (_, Comp::None) => "application/vnd.oci.image.layer.v1.tar",
            (_, Comp::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// A single-platform image ready to push.
#[derive(Debug, Clone)]
pub struct Image {
    pub layers: Vec<Layer>,
    pub format: Format,
    pub architecture: String,
    /// The `config` object of the image configuration (Env, Entrypoint, …).
    pub run_config: serde_json::Value,
}

/// The blobs and manifest of a built image.
pub struct Built {
    pub blobs: Vec<(Digest, Vec<u8>)>,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub layer_digests: Vec<Digest>,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    pub media_type: &'static str,
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

impl Image {
    pub fn new(format: Format, layers: Vec<Layer>) -> Image {
        Image {
            layers,
            format,
            architecture: host_arch().into(),
            run_config: serde_json::json!({
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
            }),
        }
    }

    pub fn build(&self) -> Built {
        let mut blobs = Vec::new();
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layer_digests = Vec::new();
        for l in &self.layers {
            let tar = l.tar();
            diff_ids.push(Digest::of(&tar).to_string());
            let blob = compress(&tar, l.comp);
            let d = Digest::of(&blob);
            layer_descs.push(serde_json::json!({
                "mediaType": l.media_type(self.format), "digest": d.to_string(), "size": blob.len(),
            }));
            layer_digests.push(d.clone());
            blobs.push((d, blob));
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": self.architecture, "os": "linux",
            "config": self.run_config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let config_digest = Digest::of(&config);
        blobs.push((config_digest.clone(), config.clone()));
        let (media_type, config_type) = match self.format {
            Format::Docker => (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.container.image.v1+json",
            ),
            _ => (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
            ),
        };
        let mut manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": config_type, "digest": config_digest.to_string(), "size": config.len()},
            "layers": layer_descs,
        });
        if self.format != Format::OciNoMediaType {
            manifest["mediaType"] = media_type.into();
        }
        let manifest = serde_json::to_vec_pretty(&manifest).unwrap();
        Built {
            blobs,
            config,
            config_digest,
            layer_digests,
            manifest_digest: Digest::of(&manifest),
            manifest,
            media_type,
        }
    }

    /// Push blobs and manifest; tag with `tag` (or only by digest when `None`).
    pub fn push(&self, target: &dyn PushTarget, repo: &str, tag: Option<&str>) -> Built {
        let built = self.build();
        for (d, data) in &built.blobs {
            push_blob(target, repo, d, data);
        }
        let reference = tag.map_or(built.manifest_digest.to_string(), str::to_string);
        push_manifest(target, repo, &reference, built.media_type, &built.manifest);
        built
    }
}

/// Push an index of already-pushed images; returns the index digest.
pub fn push_index(
    target: &dyn PushTarget,
    repo: &str,
    tag: &str,
    entries: &[(&Built, &str)],
    docker: bool,
) -> Digest {
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(b, arch)| {
            let mut platform = serde_json::json!({"os": "linux", "architecture": arch});
            if *arch == "arm64" {
                platform["variant"] = "v8".into();
            }
            serde_json::json!({
                "mediaType": b.media_type, "digest": b.manifest_digest.to_string(),
                "size": b.manifest.len(), "platform": platform,
            })
        })
        .collect();
    let media_type = if docker {
        "application/vnd.docker.distribution.manifest.list.v2+json"
    } else {
        "application/vnd.oci.image.index.v1+json"
    };
    let index = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2, "mediaType": media_type, "manifests": manifests,
    }))
    .unwrap();
    push_manifest(target, repo, tag, media_type, &index);
    Digest::of(&index)
}

fn agent() -> ureq::Agent {
    // The pusher is test tooling talking to the test's own registry: it does not verify
    // the throwaway certificate of a TLS registry (the client under test does).
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build(),
        )
        .build()
        .new_agent()
}

pub fn push_blob(target: &dyn PushTarget, repo: &str, d: &Digest, data: &[u8]) {
    let base = format!("{}://{}", target.scheme(), target.host());
    let auth = target.push_auth(repo);
    let agent = agent();
    let mut post = agent.post(format!("{base}/v2/{repo}/blobs/uploads/"));
    if let Some(a) = &auth {
        post = post.header("Authorization", a);
    }
    let resp = post.send_empty().unwrap();
    assert_eq!(resp.status().as_u16(), 202, "POST upload for {repo}");
    let location = resp
        .headers()
        .get("location")
        .expect("upload Location")
        .to_str()
        .unwrap()
        .to_string();
    let location = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let mut put = agent
        .put(format!("{location}{sep}digest={d}"))
        .header("Content-Type", "application/octet-stream");
    if let Some(a) = &auth {
        put = put.header("Authorization", a);
    }
    let resp = put.send(data).unwrap();
    let status = resp.status().as_u16();
    let mut body = String::new();
    let _ = resp.into_body().into_reader().read_to_string(&mut body);
    assert_eq!(status, 201, "PUT blob {d} to {repo}: {body}");
}

pub fn push_manifest(target: &dyn PushTarget, repo: &str, reference: &str, mt: &str, m: &[u8]) {
    let base = format!("{}://{}", target.scheme(), target.host());
    let mut put = agent()
        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("Content-Type", mt);
    if let Some(a) = target.push_auth(repo) {
        put = put.header("Authorization", a);
    }
    let resp = put.send(m).unwrap();
    let status = resp.status().as_u16();
    let mut body = String::new();
    let _ = resp.into_body().into_reader().read_to_string(&mut body);
    assert_eq!(status, 201, "PUT manifest {repo}:{reference}: {body}");
}

/// Applets linked to /bin/busybox in [`busybox_image`].
pub const BUSYBOX_APPLETS: &[&str] = &["sh", "ls", "cat", "echo", "sleep", "id", "env", "true"];

/// A one-layer worker image: static /bin/busybox (Debian's busybox-static), applet
/// symlinks, /etc/passwd and /etc/group. `None` when busybox is not installed.
pub fn busybox_layer(comp: Comp) -> Option<Layer> {
    let busybox = match std::fs::read("/bin/busybox") {
        Ok(b) => b,
        Err(_) => {
            skip!("/bin/busybox (package busybox-static) is not installed");
            return None;
        }
    };
    let mut entries = vec![
        dir("bin"),
        dir("etc"),
        Entry::Dir {
            path: "tmp".into(),
            mode: 0o1777,
        },
        file_mode("bin/busybox", &busybox, 0o755),
    ];
    for a in BUSYBOX_APPLETS {
        entries.push(symlink(&format!("bin/{a}"), "busybox"));
    }
    entries.push(file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nworker:x:1000:1000:worker:/home/worker:/bin/sh\n",
    ));
    entries.push(file("etc/group", b"root:x:0:\nworker:x:1000:\n"));
    Some(Layer::new(comp, entries))
}

pub fn busybox_image() -> Option<Image> {
    Some(Image::new(Format::Oci, vec![busybox_layer(Comp::Gzip)?]))
}
