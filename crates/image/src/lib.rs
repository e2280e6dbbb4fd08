//! OCI images: import, safe layer unpacking and the local layer store.
//!
//! Images arrive as OCI image layouts (a directory or an `oci-archive` tar). Their layers are
//! verified (every blob's sha256, every layer's diff_id) and unpacked once each, in overlayfs
//! format and with owners shifted into the sandbox id range, into a content-addressed
//! [`ImageStore`]. The runtime stacks [`ImageStore::layer_dirs`] as overlayfs lower dirs.
//!
//! The API is blocking; async callers run it on `spawn_blocking`.

pub mod build;
pub mod digest;
pub mod error;
pub mod idshift;
pub mod layout;
pub mod media;
pub mod plan;
pub mod reference;
pub mod store;
pub mod unpack;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use build::{RunConfig, import_directory};
pub use digest::Sha256Digest;
pub use error::{DigestSubject, ImageError, LayoutProblem, UnsafePathReason};
pub use idshift::{IdShift, IdShiftError};
pub use media::LayerMediaType;
pub use plan::{ImagePlan, PlannedLayer};
pub use reference::{ImageReference, ImageSelector};
pub use store::{ImageConfigSummary, ImageRecord, ImageStore, ImportSession, LayerInfo, LayerRecord};
pub use unpack::{UnpackOptions, UnpackReport};
