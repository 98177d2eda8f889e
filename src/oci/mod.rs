//! OCI images: references, the registry client, manifests, the content-addressed store and
//! layer unpacking.
//!
//! [`pull()`] takes an image reference to an installed image in the [`Store`];
//! [`Store::lookup`] finds it again offline by the same string.
//!
//! Environment read while pulling:
//! - `III_HOME`: the store (see [`crate::project::store_home`]).
//! - `III_REGISTRY_AUTH`: `host=user:password[,host=user:password…]` credentials, before
//!   docker's `config.json` (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
//! - `III_INSECURE_REGISTRIES`: `host[:port],…` that may be reached over plain HTTP when they
//!   do not speak TLS (loopback registries always may).
//! - `SSL_CERT_FILE`: a PEM bundle of trusted CA certificates, instead of the system's.
//! - `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` and `NO_PROXY` (loopback is never proxied).

pub mod digest;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

pub use manifest::ImageConfig;
pub use progress::{LayerOutcome, NoProgress, Progress};
pub use pull::pull;
pub use reference::Reference;
pub use store::{InstalledImage, Store};
