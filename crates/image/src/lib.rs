//! OCI images: import, safe layer unpacking and the local layer store.
//!
//! Images arrive from registries ([`registry::Puller`]) or as OCI image layouts (a directory or
//! an `oci-archive` tar). Their layers are verified (every blob's sha256, every layer's diff_id)
//! and unpacked once each, in overlayfs format and with owners shifted into the sandbox id range,
//! into a content-addressed [`ImageStore`]. The runtime stacks [`ImageStore::layer_dirs`] as overlayfs lower dirs.
//!
//! The store's API is blocking; async callers run it on `spawn_blocking`. Registry pulls are async
//! and do their blocking work on tokio's blocking pool. The store evicts unused images and layers
//! with [`ImageStore::gc`].

pub mod build;
pub mod catalog;
mod concurrent;
pub mod debian;
pub mod digest;
mod document;
pub mod error;
pub mod idshift;
pub mod layout;
pub mod media;
pub mod plan;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use build::{RunConfig, import_directory};
pub use catalog::{Catalog, CatalogEntry};
pub use digest::Sha256Digest;
pub use error::{DigestSubject, ImageError, LayoutProblem, UnsafePathReason};
pub use idshift::{IdShift, IdShiftError};
pub use media::LayerMediaType;
pub use plan::{ImagePlan, PlannedLayer};
pub use reference::{ImageReference, ImageSelector};
pub use registry::{LayerStatus, PullConfig, PullError, PullProgress, Puller, RegistryCredentials};
pub use store::{
    GcReport, ImageConfigSummary, ImageRecord, ImageSource, ImageStore, ImportSession, LayerInfo, LayerRecord,
};
pub use unpack::{UnpackOptions, UnpackReport};
