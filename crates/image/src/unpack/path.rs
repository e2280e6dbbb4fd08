//! Normalised layer entry names: relative, no `..`, no empty or `.` components, no NUL.

use std::ffi::CString;

use crate::error::UnsafePathReason;

/// A normalised entry name: zero or more components, each non-empty, not `.` or `..`, and free of
/// `/` and NUL. Zero components is the layer root itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct EntryPath {
    components: Vec<Vec<u8>>,
}

impl EntryPath {
    /// Normalises a raw tar name: leading `/` and `./` and inner `.`/empty components go; a `..`
    /// component or a NUL byte refuses the name.
    pub(crate) fn normalise(raw: &[u8]) -> Result<Self, UnsafePathReason> {
        if raw.contains(&0) {
            return Err(UnsafePathReason::Nul);
        }
        let mut components = Vec::new();
        for component in raw.split(|&b| b == b'/') {
            match component {
                b"" | b"." => {}
                b".." => return Err(UnsafePathReason::ParentComponent),
                other => components.push(other.to_vec()),
            }
        }
        Ok(Self { components })
    }

    /// Whether this is the layer root.
    pub(crate) fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The last component, if any.
    pub(crate) fn file_name(&self) -> Option<&[u8]> {
        self.components.last().map(Vec::as_slice)
    }

    /// The components before the last (the parent directory); empty for the root or a top entry.
    pub(crate) fn parent_components(&self) -> &[Vec<u8>] {
        match self.components.split_last() {
            Some((_, parent)) => parent,
            None => &[],
        }
    }

    /// The parent path joined with `/`, relative (`.` for the root).
    pub(crate) fn parent_c_string(&self) -> CString {
        join(self.parent_components())
    }

    /// The whole path joined with `/`, relative (`.` for the root).
    pub(crate) fn c_string(&self) -> CString {
        join(&self.components)
    }

    /// The components.
    #[cfg(test)]
    pub(crate) fn components(&self) -> &[Vec<u8>] {
        &self.components
    }

    /// This path with its last component replaced by `name` (same parent).
    pub(crate) fn with_file_name(&self, name: &[u8]) -> Self {
        let mut components = self.parent_components().to_vec();
        components.push(name.to_vec());
        Self { components }
    }
}

/// Joins components with `/`; `.` when there are none.
pub(crate) fn join(components: &[Vec<u8>]) -> CString {
    let joined = if components.is_empty() { b".".to_vec() } else { components.join(&b'/') };
    // Components come from `EntryPath::normalise`, which refuses NUL bytes, so this cannot fail;
    // a NUL would still only degrade to an empty (failing) path, never an unsafe one.
    CString::new(joined).unwrap_or_default()
}

/// Makes a component usable as a `CString` name for the `*at` calls.
pub(crate) fn c_name(component: &[u8]) -> CString {
    // Components never contain NUL (see `EntryPath::normalise`); an empty name fails the syscall.
    CString::new(component).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn comps(raw: &str) -> Vec<String> {
        EntryPath::normalise(raw.as_bytes())
            .unwrap()
            .components()
            .iter()
            .map(|c| String::from_utf8(c.clone()).unwrap())
            .collect()
    }

    #[test]
    fn normalise_strips_leading_slashes_and_dots() {
        assert_eq!(comps("/etc/passwd"), ["etc", "passwd"]);
        assert_eq!(comps("./etc//./passwd/"), ["etc", "passwd"]);
        assert_eq!(comps("./"), Vec::<String>::new());
        assert!(EntryPath::normalise(b"/").unwrap().is_root());
        assert_eq!(comps("...").len(), 1);
    }

    #[test]
    fn normalise_refuses_parent_components_and_nul() {
        for bad in ["../escape", "/abs/../../x", "a/../../x", "a/..", ".."] {
            assert_eq!(EntryPath::normalise(bad.as_bytes()), Err(UnsafePathReason::ParentComponent), "{bad}");
        }
        assert_eq!(EntryPath::normalise(b"a\0b"), Err(UnsafePathReason::Nul));
    }

    proptest! {
        #[test]
        fn normalised_names_are_relative_with_no_dot_dot_or_empty_components(
            parts in prop::collection::vec(
                prop_oneof![
                    Just(String::new()), Just(".".to_owned()), Just("..".to_owned()),
                    Just("/".to_owned()), "[a-z.]{1,4}", "[^\u{0}]{0,3}",
                ],
                0..8,
            )
        ) {
            let raw = parts.join("/");
            match EntryPath::normalise(raw.as_bytes()) {
                Ok(path) => {
                    let joined = path.c_string();
                    let bytes = joined.as_bytes();
                    prop_assert!(!bytes.starts_with(b"/"));
                    for c in path.components() {
                        prop_assert!(!c.is_empty());
                        prop_assert!(c.as_slice() != b"." && c.as_slice() != b"..");
                        prop_assert!(!c.contains(&b'/') && !c.contains(&0));
                    }
                    // Accepted only when the raw name had no `..` component at all.
                    prop_assert!(!raw.split('/').any(|c| c == ".."));
                }
                Err(_) => prop_assert!(raw.split('/').any(|c| c == "..") || raw.contains('\0')),
            }
        }
    }
}
