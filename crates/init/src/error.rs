//! The answer to a failed request: a protocol error code and a message that names what failed.

use std::fmt;

use sandpit_init::protocol::{ErrorCode, Response};

use crate::sys::os_message;

/// Why a request failed, as the host will be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What went wrong, naming the path, user or process concerned.
    pub message: String,
}

impl Failure {
    /// A failure with an explicit code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// A malformed request or an out-of-range value.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// An OS error about `subject` (a path, usually): `"<subject>: <OS text>"`.
    pub fn os(errno: i32, subject: &str) -> Self {
        Self::new(code_for_errno(errno), format!("{subject}: {}", os_message(errno)))
    }

    /// Same as [`Failure::os`], from a rustix error.
    pub fn errno(errno: rustix::io::Errno, subject: &str) -> Self {
        Self::os(errno.raw_os_error(), subject)
    }

    /// Same as [`Failure::os`], from a std error (errors without an OS number are `io`).
    pub fn io(err: &std::io::Error, subject: &str) -> Self {
        match err.raw_os_error() {
            Some(errno) => Self::os(errno, subject),
            None => Self::new(ErrorCode::Io, format!("{subject}: {err}")),
        }
    }

    /// The protocol answer.
    pub fn into_response(self) -> Response {
        Response::Error { code: self.code, message: self.message }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The protocol code of an OS error number.
pub fn code_for_errno(errno: i32) -> ErrorCode {
    match errno {
        libc::ENOENT => ErrorCode::NotFound,
        libc::EEXIST => ErrorCode::AlreadyExists,
        libc::EACCES | libc::EPERM | libc::EROFS => ErrorCode::PermissionDenied,
        libc::ENOTDIR => ErrorCode::NotADirectory,
        libc::EISDIR => ErrorCode::IsADirectory,
        libc::ENOTEMPTY => ErrorCode::DirectoryNotEmpty,
        libc::ENOSPC | libc::EDQUOT => ErrorCode::NoSpace,
        libc::ELOOP | libc::EINVAL | libc::ENAMETOOLONG => ErrorCode::InvalidArgument,
        libc::ESRCH => ErrorCode::NoSuchProcess,
        _ => ErrorCode::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_maps_to_the_documented_codes() {
        assert_eq!(code_for_errno(libc::ENOENT), ErrorCode::NotFound);
        assert_eq!(code_for_errno(libc::EEXIST), ErrorCode::AlreadyExists);
        assert_eq!(code_for_errno(libc::EACCES), ErrorCode::PermissionDenied);
        assert_eq!(code_for_errno(libc::EPERM), ErrorCode::PermissionDenied);
        assert_eq!(code_for_errno(libc::ENOTDIR), ErrorCode::NotADirectory);
        assert_eq!(code_for_errno(libc::EISDIR), ErrorCode::IsADirectory);
        assert_eq!(code_for_errno(libc::ENOTEMPTY), ErrorCode::DirectoryNotEmpty);
        assert_eq!(code_for_errno(libc::ENOSPC), ErrorCode::NoSpace);
        assert_eq!(code_for_errno(libc::EDQUOT), ErrorCode::NoSpace);
        assert_eq!(code_for_errno(libc::ELOOP), ErrorCode::InvalidArgument);
        assert_eq!(code_for_errno(libc::EINVAL), ErrorCode::InvalidArgument);
        assert_eq!(code_for_errno(libc::EIO), ErrorCode::Io);
    }

    #[test]
    fn message_names_the_subject() {
        let f = Failure::os(libc::ENOENT, "/tmp/x");
        assert_eq!(f.message, "/tmp/x: No such file or directory");
    }
}
