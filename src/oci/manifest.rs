//! Manifests (OCI image manifest and index, Docker schema-2 manifest and manifest list) and
//! the image configuration a worker is started from.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::digest::Digest;
use super::unpack::compress::Compression;
use crate::{err, Context, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";

/// The `Accept` header for manifest requests: every kind we can read.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest we read: real ones are a few KiB; the bound keeps a hostile registry
/// from making us buffer gigabytes.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// A pointer to a blob or another manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    #[serde(deserialize_with = "de_digest")]
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn de_digest<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
    let s = String::deserialize(d)?;
    Digest::parse(&s).map_err(|e| serde::de::Error::custom(e.message()))
}

/// A single-platform image: its configuration blob and its layers, bottom first.
#[derive(Debug, Clone)]
pub struct ImageManifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// What a manifest request returned.
#[derive(Debug, Clone)]
pub enum Manifest {
    Image(ImageManifest),
    /// A multi-platform index / manifest list.
    Index(Vec<Descriptor>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

impl Manifest {
    /// Parse manifest bytes. The kind comes from the body's `mediaType`, else the response's
    /// `Content-Type`, else the shape of the content (some registries and tools omit both).
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest> {
        let raw: RawManifest =
            serde_json::from_slice(bytes).context("manifest is not valid JSON")?;
        if raw.schema_version == Some(1)
            || content_type.is_some_and(|c| c.starts_with(DOCKER_SCHEMA1))
        {
            return Err(err!(
                "Docker schema-1 manifests are not supported (deprecated since 2017); re-push the image with a current tool"
            ));
        }
        let declared = raw
            .media_type
            .as_deref()
            .or(content_type.map(|c| c.split(';').next().unwrap_or(c).trim()));
        let is_index = match declared {
            Some(OCI_INDEX | DOCKER_LIST) => true,
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
            // Unknown or generic (application/json, octet-stream): decide by content.
            _ => raw.manifests.is_some(),
        };
        if is_index {
            let manifests = raw
                .manifests
                .context("manifest index has no `manifests` list")?;
            return Ok(Manifest::Index(manifests));
        }
        let config = raw.config.context("image manifest has no `config`")?;
        let layers = raw.layers.context("image manifest has no `layers`")?;
        if layers.is_empty() {
            return Err(err!("image manifest has no layers"));
        }
        // An artifact (a Helm chart, a signature, an SBOM) is not a root filesystem: say so
        // before downloading it rather than failing on its bytes. A descriptor without a
        // media type is left to the content sniffing of the unpacker.
        for (i, l) in layers.iter().enumerate() {
            if !l.media_type.is_empty() && Compression::from_media_type(&l.media_type).is_none() {
                return Err(err!(
                    "layer {} has media type {:?}, which is not an image layer (is this an artifact rather than a container image?)",
                    i + 1,
                    l.media_type
                ));
            }
        }
        Ok(Manifest::Image(ImageManifest { config, layers }))
    }
}

/// The platform this binary runs on, as OCI names it.
pub fn host_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    Platform {
        os: "linux".into(),
        architecture: architecture.into(),
        variant: None,
    }
}

/// Choose the entry of an index for `want` (os and architecture; for arm64 the `v8` variant
/// or none). Attestation entries (`unknown/unknown`) are never chosen.
pub fn select_platform<'a>(entries: &'a [Descriptor], want: &Platform) -> Result<&'a Descriptor> {
    let fits = |p: &Platform| {
        p.os == want.os
            && p.architecture == want.architecture
            && match (&want.variant, p.variant.as_deref()) {
                (Some(w), v) => v == Some(w.as_str()),
                (None, None | Some("v8")) => true,
                (None, Some(_)) => want.architecture != "arm64",
            }
    };
    entries
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(fits))
        .ok_or_else(|| {
            let available: Vec<String> = entries
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .filter(|p| p.os != "unknown")
                .map(Platform::to_string)
                .collect();
            err!(
                "no image for platform {want} (available: {})",
                if available.is_empty() {
                    "none declared".to_string()
                } else {
                    available.join(", ")
                }
            )
        })
}

/// What a worker is started from: the `config` object of the image configuration blob.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawRunConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    stop_signal: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct RawImageConfig {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    config: Option<RawRunConfig>,
}

/// The parsed configuration blob: platform plus run configuration.
#[derive(Debug, Clone)]
pub struct ParsedConfig {
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub config: ImageConfig,
}

impl ImageConfig {
    /// Parse an image configuration blob (`application/vnd.oci.image.config.v1+json` or
    /// Docker's container config). Empty strings count as unset, as docker treats them.
    pub fn parse(bytes: &[u8]) -> Result<ParsedConfig> {
        let raw: RawImageConfig =
            serde_json::from_slice(bytes).context("image configuration is not valid JSON")?;
        let c = raw.config.unwrap_or_default();
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Ok(ParsedConfig {
            os: raw.os,
            architecture: raw.architecture,
            config: ImageConfig {
                env: c.env.unwrap_or_default(),
                entrypoint: c.entrypoint,
                cmd: c.cmd,
                working_dir: nonempty(c.working_dir),
                user: nonempty(c.user),
                stop_signal: nonempty(c.stop_signal),
                labels: c.labels.unwrap_or_default(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    fn image_json(media_type: Option<&str>) -> String {
        let mt = media_type.map_or(String::new(), |m| format!(r#""mediaType":"{m}","#));
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":10}},
               "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":20}}]}}"#
        )
    }

    fn index_json(media_type: Option<&str>) -> String {
        let mt = media_type.map_or(String::new(), |m| format!(r#""mediaType":"{m}","#));
        format!(
            r#"{{"schemaVersion":2,{mt}"manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D3}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#
        )
    }

    #[test]
    fn an_artifact_is_refused_before_any_download() {
        let helm = image_json(Some(OCI_MANIFEST)).replace(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
        );
        let e = Manifest::parse(helm.as_bytes(), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("layer 1 has media type") && e.contains("helm") && e.contains("artifact"),
            "{e}"
        );
        // Every layer type a container image uses is accepted, as is a missing one.
        for mt in [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ] {
            let j = image_json(None).replace("application/vnd.oci.image.layer.v1.tar+gzip", mt);
            assert!(Manifest::parse(j.as_bytes(), None).is_ok(), "{mt}");
        }
        let bare = image_json(None).replace(
            r#""mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","#,
            "",
        );
        assert!(Manifest::parse(bare.as_bytes(), None).is_ok());
    }

    #[test]
    fn image_manifests_of_every_flavour() {
        for (mt, ct) in [
            (Some(OCI_MANIFEST), None),
            (Some(DOCKER_MANIFEST), None),
            (None, Some(DOCKER_MANIFEST)),
            (None, None),
            (None, Some("application/json")),
        ] {
            match Manifest::parse(image_json(mt).as_bytes(), ct).unwrap() {
                Manifest::Image(m) => {
                    assert_eq!(m.config.digest.to_string(), D1);
                    assert_eq!(m.layers.len(), 1);
                    assert_eq!(m.layers[0].size, 20);
                }
                Manifest::Index(_) => panic!("{mt:?}/{ct:?} read as index"),
            }
        }
    }

    #[test]
    fn indexes_and_platform_choice() {
        for mt in [Some(OCI_INDEX), Some(DOCKER_LIST), None] {
            let Manifest::Index(entries) =
                Manifest::parse(index_json(mt).as_bytes(), None).unwrap()
            else {
                panic!("{mt:?} not an index")
            };
            let pick = |arch: &str| {
                let want = Platform {
                    os: "linux".into(),
                    architecture: arch.into(),
                    variant: None,
                };
                select_platform(&entries, &want).map(|d| d.digest.to_string())
            };
            assert_eq!(pick("amd64").unwrap(), D2);
            assert_eq!(pick("arm64").unwrap(), D1);
            let e = pick("riscv64").unwrap_err().to_string();
            assert!(e.contains("linux/riscv64"), "{e}");
            assert!(e.contains("linux/arm64/v8, linux/amd64"), "{e}");
            assert!(!e.contains("unknown"), "{e}");
        }
    }

    #[test]
    fn rejects_broken_manifests() {
        assert!(Manifest::parse(b"{not json", None).is_err());
        let e = Manifest::parse(br#"{"schemaVersion":1,"fsLayers":[]}"#, None).unwrap_err();
        assert!(e.to_string().contains("schema-1"), "{e}");
        let no_layers = format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","config":{{"digest":"{D1}","size":1}},"layers":[]}}"#
        );
        assert!(Manifest::parse(no_layers.as_bytes(), None).is_err());
        let bad_digest = r#"{"config":{"digest":"sha256:zz","size":1},"layers":[]}"#;
        assert!(Manifest::parse(bad_digest.as_bytes(), None).is_err());
    }

    #[test]
    fn image_config_fields() {
        let json = br#"{"architecture":"amd64","os":"linux","config":{
            "Env":["PATH=/usr/bin","A=b"],"Entrypoint":["/bin/w"],"Cmd":["--url","x"],
            "WorkingDir":"/app","User":"1000:1000","StopSignal":"SIGINT",
            "Labels":{"org.example":"yes"}},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let p = ImageConfig::parse(json).unwrap();
        assert_eq!(p.architecture.as_deref(), Some("amd64"));
        let c = p.config;
        assert_eq!(c.env, ["PATH=/usr/bin", "A=b"]);
        assert_eq!(c.entrypoint.unwrap(), ["/bin/w"]);
        assert_eq!(c.cmd.unwrap(), ["--url", "x"]);
        assert_eq!(c.working_dir.as_deref(), Some("/app"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(c.labels["org.example"], "yes");
        let bare = ImageConfig::parse(br#"{"config":{"Cmd":null,"WorkingDir":""}}"#).unwrap();
        assert_eq!(bare.config, ImageConfig::default());
    }
}
