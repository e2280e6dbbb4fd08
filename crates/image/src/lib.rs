//! OCI images: import, safe layer unpacking and the local layer store.
