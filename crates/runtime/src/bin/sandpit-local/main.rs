//! `sandpit-local`: drives the local backend directly, without the control plane. For operators
//! debugging a host, for the crash-recovery tests (which kill it at failpoints) and for the
//! runtime benchmarks.
//!
//! ```text
//! sandpit-local --root DIR --images DIR import OCI_LAYOUT_DIR REFERENCE [NAME]
//! sandpit-local --root DIR --images DIR create ID IMAGE [--keep-running] [-- ARGV...]
//! sandpit-local --root DIR --images DIR pause|resume|destroy|status ID
//! sandpit-local --root DIR --images DIR exec ID -- ARGV...
//! sandpit-local --root DIR --images DIR list|recover
//! sandpit-local --root DIR --images DIR bench IMAGE ROOTFS_DIR [--idle N]
//! ```
//! `SANDPIT_UID_BASE` sets the host uid of sandbox root (default 1000000).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use sandpit_image::{IdShift, ImageReference, ImageStore};
use sandpit_init::protocol::{Command, ExecRequest};
use sandpit_runtime::{Backend, ExecEvent, LocalBackend, LocalConfig, SandboxSpec};
use sandpit_types::SandboxId;
use tokio::io::AsyncWriteExt;

const USAGE: &str = "usage: sandpit-local --root DIR --images DIR <import|create|pause|resume|destroy|status|exec|list|recover> ...";

struct Args {
    root: PathBuf,
    images: PathBuf,
    rest: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut root, mut images, mut rest) = (None, None, Vec::new());
    while let Some(a) = it.next() {
        match a.as_str() {
            "--root" => root = it.next().map(PathBuf::from),
            "--images" => images = it.next().map(PathBuf::from),
            _ => {
                rest.push(a);
                rest.extend(it.by_ref());
            }
        }
    }
    Ok(Args { root: root.ok_or("--root is required")?, images: images.ok_or("--images is required")?, rest })
}

fn id_arg(rest: &[String], i: usize) -> Result<SandboxId, String> {
    rest.get(i).ok_or("missing sandbox id")?.parse().map_err(|e| format!("{e}"))
}

/// Everything after `--`.
fn after_dashes(rest: &[String]) -> Vec<String> {
    rest.iter().skip_while(|a| *a != "--").skip(1).cloned().collect()
}

async fn run(args: Args) -> Result<i32, String> {
    let base: u32 = std::env::var("SANDPIT_UID_BASE").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let shift = IdShift::new(base, 65536).map_err(|e| e.to_string())?;
    let store = Arc::new(ImageStore::open(&args.images, shift).map_err(|e| e.to_string())?);
    let verb = args.rest.first().map(String::as_str).unwrap_or("");
    if verb == "import" {
        let dir = args.rest.get(1).ok_or("missing layout dir")?;
        let reference =
            ImageReference::parse(args.rest.get(2).ok_or("missing reference")?).map_err(|e| e.to_string())?;
        let rec = store
            .import_oci_layout(std::path::Path::new(dir), args.rest.get(3).map(String::as_str), &reference)
            .map_err(|e| e.to_string())?;
        println!("{}", rec.manifest_digest);
        return Ok(0);
    }
    let backend =
        Arc::new(LocalBackend::open(LocalConfig::new(&args.root), store).map_err(|e| e.to_string())?);
    let json = |v: &dyn erased::Json| println!("{}", v.to_json());
    match verb {
        "recover" => json(&backend.recover().await.map_err(|e| e.to_string())?),
        "create" => {
            let id = id_arg(&args.rest, 1)?;
            let image = args.rest.get(2).ok_or("missing image")?;
            let mut spec = SandboxSpec::new(id, image.clone());
            spec.keep_running = args.rest.iter().any(|a| a == "--keep-running");
            let argv = after_dashes(&args.rest);
            if !argv.is_empty() {
                spec.entrypoint = Some(argv);
            }
            json(&backend.create(spec).await.map_err(|e| e.to_string())?);
        }
        "pause" => backend.pause(&id_arg(&args.rest, 1)?).await.map_err(|e| e.to_string())?,
        "resume" => {
            json(&backend.resume(&id_arg(&args.rest, 1)?, Vec::new()).await.map_err(|e| e.to_string())?)
        }
        "destroy" => backend.destroy(&id_arg(&args.rest, 1)?).await.map_err(|e| e.to_string())?,
        "status" => json(&backend.status(&id_arg(&args.rest, 1)?).await.map_err(|e| e.to_string())?),
        "list" => json(&backend.list().await.map_err(|e| e.to_string())?),
        "bench" => {
            let image = args.rest.get(1).ok_or("missing image")?.clone();
            let rootfs =
                PathBuf::from(args.rest.get(2).ok_or("missing rootfs dir for the raw runc baseline")?);
            let idle = args
                .rest
                .iter()
                .position(|a| a == "--idle")
                .and_then(|i| args.rest.get(i + 1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(200);
            let report = bench::run(&backend, &args.root, &image, &rootfs, idle).await?;
            println!("{report}");
        }
        "exec" => {
            let id = id_arg(&args.rest, 1)?;
            let client = backend.init(&id).await.map_err(|e| e.to_string())?;
            let req =
                ExecRequest { command: Some(Command::Argv(after_dashes(&args.rest))), ..Default::default() };
            let mut s = client.exec(req).await.map_err(|e| e.to_string())?;
            let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
            while let Some(ev) = s.next().await.map_err(|e| e.to_string())? {
                match ev {
                    ExecEvent::Stdout(b) | ExecEvent::Pty(b) => {
                        out.write_all(&b).await.map_err(|e| e.to_string())?
                    }
                    ExecEvent::Stderr(b) => err.write_all(&b).await.map_err(|e| e.to_string())?,
                    ExecEvent::Exited(st) => {
                        out.flush().await.map_err(|e| e.to_string())?;
                        return Ok(st.code.unwrap_or_else(|| 128 + st.signal.unwrap_or(0)));
                    }
                }
            }
        }
        _ => return Err(USAGE.into()),
    }
    Ok(0)
}

mod bench;

/// Printing any serializable answer as one JSON line.
mod erased {
    /// Something printable as JSON.
    pub trait Json {
        /// The JSON text.
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("sandpit-local: {e}");
            ExitCode::from(1)
        }
    }
}
