//! GPU models: the product sheet's types, names as NVML reports them, and how a requested type
//! matches a device's type.
//!
//! # Type names
//!
//! A device's type is a canonical name: one of [`KNOWN_MODELS`] (`T4`, `A10`, `L40`, `L40S`,
//! `A100-40GB`, `A100-80GB`, `H100`, `H200`), or for any other model a cleaned form of its NVML name
//! (see [`GpuModel::from_nvml_name`]).
//!
//! # Matching a requested type ([`type_matches`])
//!
//! - Case does not matter, and spaces or underscores in the request count as `-`
//!   (`h100`, `a100_80gb` and `rtx 6000 ada` are fine).
//! - A type without its memory suffix names every size of that type: `A100` matches `A100-40GB`
//!   and `A100-80GB` (a family alias). The suffix is `-<digits>GB` at the end of the type name.
//! - Nothing else matches: `H100` does not match `H200`, `L40` does not match `L40S`.

use sandpit_types::ByteSize;
use serde::{Deserialize, Serialize};

/// A model on the product sheet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// The canonical type name users request.
    pub name: &'static str,
    /// The word that identifies the model in an NVML name (`A100` for both A100 sizes).
    family: &'static str,
    /// Nominal memory, used for simulated devices and to tell models of one family apart.
    pub memory: ByteSize,
}

const fn known(name: &'static str, family: &'static str, gib: u64) -> KnownModel {
    KnownModel { name, family, memory: ByteSize::gib(gib) }
}

/// The product sheet's models, with their nominal memory.
pub const KNOWN_MODELS: &[KnownModel] = &[
    known("T4", "T4", 16),
    known("A10", "A10", 24),
    known("L40", "L40", 48),
    known("L40S", "L40S", 48),
    known("A100-40GB", "A100", 40),
    known("A100-80GB", "A100", 80),
    known("H100", "H100", 80),
    known("H200", "H200", 141),
];

/// Words of an NVML name that say nothing about the model: vendor and brand lines, form factors,
/// memory technology.
const NOISE_WORDS: &[&str] = &[
    "NVIDIA",
    "TESLA",
    "GEFORCE",
    "QUADRO",
    "GENERATION",
    "PCIE",
    "SXM",
    "SXM2",
    "SXM3",
    "SXM4",
    "SXM5",
    "HBM2",
    "HBM2E",
    "HBM3",
    "HBM3E",
];

/// The longest type name (requests allow 64 characters).
pub const MAX_TYPE_NAME: usize = 64;

/// A GPU type with the memory of one device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuModel {
    /// The canonical type name.
    pub name: String,
    /// Memory of one device.
    pub memory: ByteSize,
}

impl GpuModel {
    /// The type of a device from the name and total memory NVML reports for it.
    ///
    /// A product-sheet model is recognized when its identifying word is one of the name's words
    /// (split at spaces and `-`, any case) and the memory is within 1/8 of the model's nominal
    /// memory; the memory tells the two A100 sizes apart, and keeps a different product that
    /// shares a word (the 94 GB `H100 NVL`) from passing for the sheet's model. When
    /// `memory_bytes` is 0 (unknown), the name alone decides, using an `80GB`/`40GB` word for
    /// the A100.
    ///
    /// Any other model gets a cleaned name: the name's words without vendor, brand, form-factor
    /// and memory-technology words (`NVIDIA`, `Tesla`, `GeForce`, `Quadro`, `Generation`,
    /// `PCIe`, `SXM*`, `HBM*`), each reduced to ASCII letters and digits, joined with `-`, at most
    /// 64 characters: `"NVIDIA RTX 6000 Ada Generation"` → `RTX-6000-Ada`, `"NVIDIA H100 NVL"` →
    /// `H100-NVL`. An empty result becomes `GPU`.
    ///
    /// The memory of the result is `memory_bytes` as reported (the real size, which share limits
    /// are computed from), or the nominal memory of a known model when it is 0.
    pub fn from_nvml_name(name: &str, memory_bytes: u64) -> Self {
        let words = words(name);
        let candidates: Vec<&KnownModel> =
            KNOWN_MODELS.iter().filter(|m| words.iter().any(|w| w.eq_ignore_ascii_case(m.family))).collect();
        let found = if memory_bytes == 0 {
            match candidates.as_slice() {
                [one] => Some(*one),
                several => several.iter().copied().find(|m| {
                    let size = m.name.rsplit('-').next().unwrap_or_default();
                    words.iter().any(|w| w.eq_ignore_ascii_case(size))
                }),
            }
        } else {
            candidates
                .into_iter()
                .filter(|m| memory_close(memory_bytes, m.memory.bytes()))
                .min_by_key(|m| memory_bytes.abs_diff(m.memory.bytes()))
        };
        match found {
            Some(m) => Self {
                name: m.name.to_string(),
                memory: if memory_bytes == 0 { m.memory } else { ByteSize(memory_bytes) },
            },
            None => Self { name: clean_name(&words), memory: ByteSize(memory_bytes) },
        }
    }

    /// The product-sheet model with this canonical name, any case (`h100`, `a100-80gb`).
    pub fn known(name: &str) -> Option<&'static KnownModel> {
        KNOWN_MODELS.iter().find(|m| m.name.eq_ignore_ascii_case(name.trim()))
    }
}

/// Whether a device's memory is within 1/8 of a model's nominal memory.
fn memory_close(actual: u64, nominal: u64) -> bool {
    u128::from(actual.abs_diff(nominal)) * 8 <= u128::from(nominal)
}

/// The words of an NVML name, split at whitespace and `-`.
fn words(name: &str) -> Vec<&str> {
    name.split(|c: char| c.is_whitespace() || c == '-').filter(|w| !w.is_empty()).collect()
}

fn clean_name(words: &[&str]) -> String {
    let kept: Vec<String> = words
        .iter()
        .filter(|w| !NOISE_WORDS.iter().any(|n| n.eq_ignore_ascii_case(w)))
        .map(|w| w.chars().filter(char::is_ascii_alphanumeric).collect::<String>())
        .filter(|w| !w.is_empty())
        .collect();
    let mut name = kept.join("-");
    name.truncate(MAX_TYPE_NAME);
    let name = name.trim_end_matches('-');
    if name.is_empty() { "GPU".to_string() } else { name.to_string() }
}

/// The type name without a trailing `-<digits>GB` memory suffix, if it has one.
pub(crate) fn family_of(model: &str) -> Option<&str> {
    let (family, size) = model.rsplit_once('-')?;
    let digits = size.strip_suffix("GB").or_else(|| size.strip_suffix("gb"))?;
    (!family.is_empty() && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(family)
}

/// Whether a requested type names a device's type (rules in the module documentation).
pub fn type_matches(requested: &str, model: &str) -> bool {
    let requested = normalize_request(requested);
    requested.eq_ignore_ascii_case(model)
        || family_of(model).is_some_and(|f| requested.eq_ignore_ascii_case(f))
}

fn normalize_request(requested: &str) -> String {
    requested.trim().chars().map(|c| if c == ' ' || c == '_' { '-' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = ByteSize::GIB;
    const MIB: u64 = ByteSize::MIB;

    #[test]
    fn nvml_names_map_to_canonical_types() {
        let table: &[(&str, u64, &str)] = &[
            ("Tesla T4", 15_360 * MIB, "T4"),
            ("NVIDIA A10", 23_028 * MIB, "A10"),
            ("NVIDIA L40", 46_068 * MIB, "L40"),
            ("NVIDIA L40S", 46_068 * MIB, "L40S"),
            ("NVIDIA A100-SXM4-40GB", 40_960 * MIB, "A100-40GB"),
            ("NVIDIA A100-PCIE-40GB", 40_960 * MIB, "A100-40GB"),
            ("NVIDIA A100-SXM4-80GB", 81_920 * MIB, "A100-80GB"),
            ("NVIDIA A100 80GB PCIe", 81_920 * MIB, "A100-80GB"),
            ("NVIDIA H100 80GB HBM3", 81_559 * MIB, "H100"),
            ("NVIDIA H100 PCIe", 81_559 * MIB, "H100"),
            ("NVIDIA H200", 143_771 * MIB, "H200"),
            // Unknown models: cleaned names.
            ("NVIDIA RTX 6000 Ada Generation", 49_140 * MIB, "RTX-6000-Ada"),
            ("NVIDIA H100 NVL", 95_830 * MIB, "H100-NVL"),
            ("NVIDIA A10G", 23_028 * MIB, "A10G"),
            ("NVIDIA GeForce RTX 4090", 24_564 * MIB, "RTX-4090"),
            ("NVIDIA GH200 480GB", 97_871 * MIB, "GH200-480GB"),
            ("Quadro RTX 8000", 49_152 * MIB, "RTX-8000"),
            ("NVIDIA", 8 * GIB, "GPU"),
            ("  weird/name (rev. 2) ", 8 * GIB, "weirdname-rev-2"),
        ];
        for &(name, mem, want) in table {
            let m = GpuModel::from_nvml_name(name, mem);
            assert_eq!(m.name, want, "{name}");
            assert_eq!(m.memory, ByteSize(mem), "{name} keeps the reported memory");
        }
    }

    #[test]
    fn the_a100_size_comes_from_memory_and_from_the_name_when_memory_is_unknown() {
        assert_eq!(GpuModel::from_nvml_name("NVIDIA A100-PCIE", 80 * GIB).name, "A100-80GB");
        assert_eq!(GpuModel::from_nvml_name("NVIDIA A100-PCIE", 40 * GIB).name, "A100-40GB");
        let m = GpuModel::from_nvml_name("NVIDIA A100-SXM4-80GB", 0);
        assert_eq!((m.name.as_str(), m.memory), ("A100-80GB", ByteSize::gib(80)));
        assert_eq!(GpuModel::from_nvml_name("NVIDIA A100", 0).name, "A100");
        assert_eq!(GpuModel::from_nvml_name("NVIDIA H200", 0).memory, ByteSize::gib(141));
    }

    #[test]
    fn a_known_word_with_foreign_memory_is_another_model() {
        let nvl = GpuModel::from_nvml_name("NVIDIA H100 NVL", 94 * GIB);
        assert_eq!(nvl.name, "H100-NVL");
        assert!(!type_matches("H100", &nvl.name));
        let odd = GpuModel::from_nvml_name("NVIDIA A100", 60 * GIB);
        assert!(GpuModel::known(&odd.name).is_none(), "{}", odd.name);
    }

    #[test]
    fn cleaned_names_are_deterministic_and_bounded() {
        let long = "NVIDIA ".to_string() + &"X".repeat(200);
        let a = GpuModel::from_nvml_name(&long, GIB);
        assert_eq!(a, GpuModel::from_nvml_name(&long, GIB));
        assert_eq!(a.name.len(), MAX_TYPE_NAME);
        let b = GpuModel::from_nvml_name(&format!("NVIDIA {} Y", "X".repeat(63)), GIB);
        assert!(!b.name.ends_with('-'), "{}", b.name);
    }

    #[test]
    fn request_types_match_case_insensitively() {
        assert!(type_matches("h100", "H100"));
        assert!(type_matches(" H100 ", "H100"));
        assert!(type_matches("a100-80gb", "A100-80GB"));
        assert!(type_matches("A100_80GB", "A100-80GB"));
        assert!(type_matches("rtx 6000 ada", "RTX-6000-Ada"));
        assert!(!type_matches("H100", "H200"));
        assert!(!type_matches("L40", "L40S"));
        assert!(!type_matches("A10", "A100-40GB"));
        assert!(!type_matches("H100", "H100-NVL"));
    }

    #[test]
    fn a_type_without_memory_suffix_matches_every_size() {
        assert!(type_matches("A100", "A100-40GB"));
        assert!(type_matches("a100", "A100-80GB"));
        assert!(type_matches("GH200", "GH200-480GB"));
        assert!(!type_matches("A100-40GB", "A100-80GB"));
        assert!(!type_matches("A100-", "A100-80GB"));
    }

    #[test]
    fn known_models_are_found_by_name_in_any_case() {
        assert_eq!(GpuModel::known("a100-80gb").map(|m| m.memory), Some(ByteSize::gib(80)));
        assert_eq!(GpuModel::known("h200").map(|m| m.name), Some("H200"));
        assert!(GpuModel::known("A100").is_none());
    }
}
