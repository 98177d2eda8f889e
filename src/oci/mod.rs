//! OCI images: references, the registry client, manifests, the content-addressed store and
//! layer unpacking.

pub mod digest;
pub mod manifest;
pub mod reference;
pub mod registry;
pub mod store;
