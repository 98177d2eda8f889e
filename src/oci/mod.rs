//! OCI images: references, the registry client, manifests, the content-addressed store and
//! layer unpacking.

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
pub use store::{InstalledImage, Store};
