//! The host id range that sandbox ids are shifted into when layers are unpacked.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Sandbox id 65534 (`nobody`/`nogroup`): where ids outside the range go.
pub const OVERFLOW_ID: u32 = 65534;

/// The lowest host id a range may start at: host system and user ids live below.
pub const MIN_HOST_BASE: u32 = 65536;

/// The smallest range accepted: it must hold the overflow id 65534.
pub const MIN_SIZE: u32 = 65536;

/// A user-namespace mapping: sandbox ids `0..size` are host ids `host_base..host_base + size`.
///
/// Layers are unpacked with every owner shifted by it, so that a sandbox whose user namespace maps
/// the same range sees files owned by its own root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawIdShift", into = "RawIdShift")]
pub struct IdShift {
    host_base: u32,
    size: u32,
}

/// Why an [`IdShift`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdShiftError {
    /// The base would overlap host system and user ids.
    #[error("id shift base {host_base} is below {MIN_HOST_BASE}")]
    BaseTooLow {
        /// The requested base.
        host_base: u32,
    },
    /// The range cannot hold the overflow id.
    #[error("id shift size {size} is below {MIN_SIZE}")]
    SizeTooSmall {
        /// The requested size.
        size: u32,
    },
    /// The range runs past the largest valid id (4294967294).
    #[error("id shift {host_base}+{size} runs past the largest valid id")]
    Overflow {
        /// The requested base.
        host_base: u32,
        /// The requested size.
        size: u32,
    },
}

impl IdShift {
    /// A validated shift: base ≥ 65536, size ≥ 65536, and the range ends below `u32::MAX`
    /// (which is the invalid id `-1`).
    pub fn new(host_base: u32, size: u32) -> Result<Self, IdShiftError> {
        if host_base < MIN_HOST_BASE {
            return Err(IdShiftError::BaseTooLow { host_base });
        }
        if size < MIN_SIZE {
            return Err(IdShiftError::SizeTooSmall { size });
        }
        match host_base.checked_add(size) {
            Some(end) if end < u32::MAX => Ok(Self { host_base, size }),
            _ => Err(IdShiftError::Overflow { host_base, size }),
        }
    }

    /// The first host id of the range (sandbox root).
    pub fn host_base(&self) -> u32 {
        self.host_base
    }

    /// How many ids the range holds.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The host id for sandbox id `id`, and whether `id` was outside the range (then it becomes the
    /// shifted overflow id).
    pub fn map(&self, id: u64) -> (u32, bool) {
        match u32::try_from(id) {
            Ok(small) if small < self.size => (self.host_base + small, false),
            _ => (self.host_base + OVERFLOW_ID, true),
        }
    }

    /// The host id of sandbox root.
    pub fn root(&self) -> u32 {
        self.host_base
    }
}

impl fmt::Display for IdShift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0:{}:{}", self.host_base, self.size)
    }
}

#[derive(Serialize, Deserialize)]
struct RawIdShift {
    host_base: u32,
    size: u32,
}

impl TryFrom<RawIdShift> for IdShift {
    type Error = IdShiftError;

    fn try_from(raw: RawIdShift) -> Result<Self, Self::Error> {
        Self::new(raw.host_base, raw.size)
    }
}

impl From<IdShift> for RawIdShift {
    fn from(shift: IdShift) -> Self {
        Self { host_base: shift.host_base, size: shift.size }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_shift_refuses_low_base_small_size_and_overflow() {
        assert_eq!(IdShift::new(1000, 65536), Err(IdShiftError::BaseTooLow { host_base: 1000 }));
        assert_eq!(IdShift::new(100_000, 1000), Err(IdShiftError::SizeTooSmall { size: 1000 }));
        assert!(matches!(IdShift::new(u32::MAX - 65536, 65536), Err(IdShiftError::Overflow { .. })));
        assert!(IdShift::new(u32::MAX - 65537, 65536).is_ok());
    }

    #[test]
    fn id_shift_maps_in_range_ids_and_sends_the_rest_to_overflow() {
        let s = IdShift::new(100_000, 65536).unwrap();
        assert_eq!(s.map(0), (100_000, false));
        assert_eq!(s.map(1000), (101_000, false));
        assert_eq!(s.map(65535), (165_535, false));
        assert_eq!(s.map(65536), (100_000 + OVERFLOW_ID, true));
        assert_eq!(s.map(u64::MAX), (100_000 + OVERFLOW_ID, true));
    }

    #[test]
    fn id_shift_deserialisation_validates() {
        assert!(serde_json::from_str::<IdShift>(r#"{"host_base":5,"size":65536}"#).is_err());
        let s: IdShift = serde_json::from_str(r#"{"host_base":200000,"size":65536}"#).unwrap();
        assert_eq!(s.host_base(), 200_000);
    }
}
