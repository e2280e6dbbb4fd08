//! Image references (`sandpit/busybox:latest`) and selectors (a reference or a manifest digest).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::{Sha256Digest, truncate};
use crate::error::ImageError;

/// The longest repository name accepted (the distribution spec's limit).
const MAX_NAME_LEN: usize = 255;
/// The longest tag accepted.
const MAX_TAG_LEN: usize = 128;

/// A validated image reference `[host[:port]/]path[:tag]`; the tag defaults to `latest`.
///
/// Path components are lowercase `[a-z0-9]` runs joined by `.`, `_`, `__` or dashes, as in the
/// distribution spec. Digest references (`name@sha256:…`) are not names in the store; look an
/// image up by digest with [`ImageSelector::Digest`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageReference {
    /// The canonical `name:tag` text.
    full: String,
    /// Where the name ends in `full` (the `:` before the tag).
    name_len: usize,
}

impl ImageReference {
    /// Parses and validates a reference.
    pub fn parse(input: &str) -> Result<Self, ImageError> {
        let invalid = |reason| ImageError::InvalidReference { input: truncate(input), reason };
        if input.contains('@') {
            return Err(invalid("digest references are not accepted here; use the digest alone"));
        }
        // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
        let last_slash = input.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match input[last_slash..].find(':') {
            Some(i) => (&input[..last_slash + i], &input[last_slash + i + 1..]),
            None => (input, "latest"),
        };
        if name.is_empty() {
            return Err(invalid("the name is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("the name is longer than 255 characters"));
        }
        validate_tag(tag).map_err(invalid)?;
        let mut components: Vec<&str> = name.split('/').collect();
        let first = components.first().copied().unwrap_or_default();
        if components.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost") {
            validate_domain(first).map_err(invalid)?;
            components.remove(0);
        }
        for component in components {
            validate_path_component(component).map_err(invalid)?;
        }
        Ok(Self { full: format!("{name}:{tag}"), name_len: name.len() })
    }

    /// The repository name, without the tag.
    pub fn name(&self) -> &str {
        &self.full[..self.name_len]
    }

    /// The tag.
    pub fn tag(&self) -> &str {
        &self.full[self.name_len + 1..]
    }

    /// The canonical `name:tag` text.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

fn validate_tag(tag: &str) -> Result<(), &'static str> {
    let mut bytes = tag.bytes();
    let Some(first) = bytes.next() else { return Err("the tag is empty") };
    if tag.len() > MAX_TAG_LEN {
        return Err("the tag is longer than 128 characters");
    }
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    if !word(first) || !bytes.all(|b| word(b) || b == b'.' || b == b'-') {
        return Err("a tag is [A-Za-z0-9_] followed by [A-Za-z0-9_.-]");
    }
    Ok(())
}

fn validate_domain(domain: &str) -> Result<(), &'static str> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("the registry port must be 1 to 5 digits");
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if host.is_empty() || !host.split('.').all(label_ok) {
        return Err("the registry host must be dot-separated letters, digits and inner dashes");
    }
    Ok(())
}

fn validate_path_component(component: &str) -> Result<(), &'static str> {
    const RULE: &str = "a path component is lowercase [a-z0-9] runs joined by '.', '_', '__' or dashes";
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    if bytes.is_empty() {
        return Err("the name has an empty path component");
    }
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else { return Err(RULE) };
    if !alnum(first) || !alnum(last) {
        return Err(RULE);
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        // A separator run: one '.', one or two '_', or any number of '-'.
        let run = bytes[i..].iter().take_while(|&&c| !alnum(c)).count();
        let sep = &component[i..i + run];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return Err(RULE);
        }
        i += run;
    }
    Ok(())
}

impl FromStr for ImageReference {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl Serialize for ImageReference {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> Deserialize<'de> for ImageReference {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How an image is looked up in the store: by one of its references or by its manifest digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageSelector {
    /// A reference such as `sandpit/busybox:latest`.
    Reference(ImageReference),
    /// A manifest digest `sha256:…`.
    Digest(Sha256Digest),
}

impl FromStr for ImageSelector {
    type Err = ImageError;

    /// `sha256:<hex>` is a digest; anything else must be a valid reference.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("sha256:") {
            s.parse().map(Self::Digest)
        } else {
            ImageReference::parse(s).map(Self::Reference)
        }
    }
}

impl fmt::Display for ImageSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reference(r) => r.fmt(f),
            Self::Digest(d) => d.fmt(f),
        }
    }
}

impl From<ImageReference> for ImageSelector {
    fn from(r: ImageReference) -> Self {
        Self::Reference(r)
    }
}

impl From<Sha256Digest> for ImageSelector {
    fn from(d: Sha256Digest) -> Self {
        Self::Digest(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_defaults_the_tag_to_latest_and_keeps_registry_ports() {
        let r = ImageReference::parse("sandpit/busybox").unwrap();
        assert_eq!((r.name(), r.tag(), r.as_str()), ("sandpit/busybox", "latest", "sandpit/busybox:latest"));
        let r = ImageReference::parse("localhost:5000/a/b-c__d.e:v1.2-rc_3").unwrap();
        assert_eq!((r.name(), r.tag()), ("localhost:5000/a/b-c__d.e", "v1.2-rc_3"));
        let r = ImageReference::parse("registry.example.com/x:1").unwrap();
        assert_eq!(r.name(), "registry.example.com/x");
    }

    #[test]
    fn reference_refuses_bad_names_tags_and_lengths() {
        for bad in [
            "",
            "Upper/case",
            "a//b",
            "a/",
            "/a",
            "a/../b",
            "a___b",
            "-a",
            "a-",
            "a:",
            "a:-tag",
            "a:t@g",
            "a@sha256:00",
            "a b",
            "a/b\0c",
            "host:99999999/a",
        ] {
            assert!(
                matches!(ImageReference::parse(bad), Err(ImageError::InvalidReference { .. })),
                "{bad:?} was accepted"
            );
        }
        let long_name = "a".repeat(256);
        assert!(ImageReference::parse(&long_name).is_err());
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(ImageReference::parse(&long_tag).is_err());
    }

    #[test]
    fn selector_tells_digests_from_references() {
        let d = Sha256Digest::of(b"x");
        assert_eq!(d.to_string().parse::<ImageSelector>().unwrap(), ImageSelector::Digest(d));
        assert!(matches!("busybox".parse::<ImageSelector>().unwrap(), ImageSelector::Reference(_)));
        assert!("sha256:zz".parse::<ImageSelector>().is_err());
    }
}
