//! Image pull and unpack benchmark (part of `scripts/bench`; root, umoci, skopeo,
//! docker-registry). Builds a synthetic image of about 500 MB compressed (six layers of 20 files; each half
//! incompressible bytes, half text that compresses about 4×, so gzip does real work both ways),
//! pushes it to a `docker-registry` on loopback, and measures, three times each on fresh
//! stores:
//!
//! - `skopeo copy docker://… oci:…` (download and verify; skopeo writes the compressed blobs and
//!   does not unpack);
//! - sandpit's pull (download, verify, decompress and unpack into the layer store);
//! - sandpit's import of the same image from a local OCI layout (verify, decompress, unpack: the
//!   unpack throughput, with no network).
//!
//! Prints a Markdown section. Usage: `bench_pull [WORK_DIR]` (default: a temporary directory
//! under /tmp).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandpit_image::testkit::OciLayout;
use sandpit_image::testkit::registry::{Auth, Registry};
use sandpit_image::{IdShift, ImageReference, ImageStore, PullConfig, Puller};

const LAYERS: usize = 6;
const FILES_PER_LAYER: usize = 20;
/// Bytes per file; half the files are random, half text.
const FILE_BYTES: usize = 6 << 20;
const RUNS: usize = 3;

/// xorshift64*: deterministic, fast, incompressible enough for gzip.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

const WORDS: [&str; 32] = [
    "sandbox", "import", "return", "while", "tensor", "layer", "model", "kernel", "def", "class", "self",
    "value", "config", "lambda", "float", "int", "string", "array", "numpy", "torch", "print", "error",
    "result", "index", "buffer", "thread", "async", "await", "match", "struct", "impl", "fn",
];

fn write_files(dir: &Path, layer: usize, rng: &mut Rng) {
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..FILES_PER_LAYER {
        let path = dir.join(format!("l{layer}-f{f}.{}", if f % 2 == 0 { "bin" } else { "txt" }));
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        let mut written = 0;
        if f % 2 == 0 {
            let mut buf = vec![0u8; 1 << 16];
            while written < FILE_BYTES {
                for chunk in buf.chunks_mut(8) {
                    chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
                }
                out.write_all(&buf).unwrap();
                written += buf.len();
            }
        } else {
            let mut line = String::new();
            while written < FILE_BYTES {
                line.clear();
                for _ in 0..12 {
                    let r = rng.next();
                    line.push_str(WORDS[(r % 32) as usize]);
                    line.push_str(if r & 0x100 == 0 { " " } else { "_" });
                    line.push_str(&format!("{}", (r >> 20) % 1000));
                    line.push(' ');
                }
                line.push('\n');
                out.write_all(line.as_bytes()).unwrap();
                written += line.len();
            }
        }
        out.flush().unwrap();
    }
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() { dir_size(&e.path()) } else { m.len() };
    }
    total
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fmt_s(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn fresh_store(work: &Path, name: &str) -> Arc<ImageStore> {
    let dir = work.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    Arc::new(ImageStore::open(&dir, IdShift::new(1_000_000, 65536).unwrap()).unwrap())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let work = match std::env::args().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => tempfile::Builder::new().prefix("sandpit-bench-pull").tempdir_in("/tmp").unwrap().keep(),
    };
    std::fs::create_dir_all(&work).unwrap();

    // The image: LAYERS layers, each a umoci repack of new files.
    let layout = OciLayout::init(&work.join("layout")).unwrap();
    layout.new_image("big").unwrap();
    let bundle = work.join("bundle");
    layout.unpack("big", &bundle).unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for l in 0..LAYERS {
        write_files(&bundle.join("rootfs").join(format!("data{l}")), l, &mut rng);
        layout.repack("big", &bundle).unwrap();
    }
    let uncompressed = dir_size(&bundle.join("rootfs"));
    std::fs::remove_dir_all(&bundle).unwrap();
    let compressed = dir_size(&layout.dir.join("blobs"));

    let registry = Registry::start(Auth::None).unwrap();
    registry.push(&layout, "big", "bench/big:1", None).unwrap();
    let remote = format!("{}/bench/big:1", registry.addr());

    let mut skopeo = Vec::new();
    for i in 0..RUNS {
        let dest = work.join(format!("skopeo-{i}"));
        let _ = std::fs::remove_dir_all(&dest);
        let t = Instant::now();
        let st = Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{remote}"))
            .arg(format!("oci:{}:big", dest.display()))
            .status()
            .unwrap();
        assert!(st.success(), "skopeo copy failed");
        skopeo.push(t.elapsed());
        if i + 1 < RUNS {
            std::fs::remove_dir_all(&dest).unwrap();
        }
    }

    let config =
        PullConfig { insecure_registries: vec![registry.addr().to_string()], ..PullConfig::default() };
    let mut pulls = Vec::new();
    let mut cached = Vec::new();
    for _ in 0..RUNS {
        let store = fresh_store(&work, "store-pull");
        let puller = Puller::new(store.clone(), config.clone());
        let t = Instant::now();
        puller.pull(&remote, None, |_| {}).await.unwrap();
        pulls.push(t.elapsed());
        let t = Instant::now();
        puller.get_or_pull(&remote, None, |_| {}).await.unwrap();
        cached.push(t.elapsed());
    }

    let mut imports = Vec::new();
    let reference = ImageReference::parse("bench/big:1").unwrap();
    for _ in 0..RUNS {
        let store = fresh_store(&work, "store-import");
        let (s, d, r) = (store.clone(), layout.dir.clone(), reference.clone());
        let t = Instant::now();
        tokio::task::spawn_blocking(move || s.import_oci_layout(&d, None, &r)).await.unwrap().unwrap();
        imports.push(t.elapsed());
    }
    let _ = std::fs::remove_dir_all(work.join("store-pull"));
    let _ = std::fs::remove_dir_all(work.join("store-import"));

    let (sk, pu, im) = (median(skopeo), median(pulls), median(imports));
    let ratio = pu.as_secs_f64() / sk.as_secs_f64();
    println!(
        "Image: {LAYERS} gzip layers, {:.0} MB compressed, {:.0} MB unpacked (half random bytes, half text), \
         in `docker-registry` on loopback. Medians of {RUNS} runs, each into an empty store.",
        mb(compressed),
        mb(uncompressed)
    );
    println!();
    println!("| measure | time | throughput |");
    println!("|---|---|---|");
    println!(
        "| `skopeo copy docker://… oci:…` (download, verify; no unpack) | {} | {:.0} MB/s compressed |",
        fmt_s(sk),
        mb(compressed) / sk.as_secs_f64()
    );
    println!(
        "| sandpit pull (download, verify, decompress, unpack into the layer store) | {} | {:.0} MB/s compressed |",
        fmt_s(pu),
        mb(compressed) / pu.as_secs_f64()
    );
    println!("| sandpit pull ÷ skopeo copy (target ≤ 1.2) | {ratio:.2} | |");
    println!(
        "| unpack: import of the same image from a local OCI layout (verify, decompress, unpack) | {} | {:.0} MB/s unpacked |",
        fmt_s(im),
        mb(uncompressed) / im.as_secs_f64()
    );
    println!(
        "| second create of the cached image (store lookup, no request) | {:.2} ms | |",
        median(cached).as_secs_f64() * 1e3
    );
    if std::env::args().nth(1).is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
}
