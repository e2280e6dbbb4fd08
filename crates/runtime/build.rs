//! Builds `sandpit-init` (and the test probe) as static binaries for inside sandboxes and hands
//! their paths to the crate, which embeds init.
//!
//! A static glibc binary needs `-C target-feature=+crt-static` with an explicit `--target`, which
//! cannot be set per package in one cargo invocation, so a nested `cargo build` runs here with its
//! own target directory (no lock shared with the outer build). `SANDPIT_INIT_BIN` and
//! `SANDPIT_PROBE_BIN` may name prebuilt binaries instead.

use std::env;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() -> Result<(), Box<dyn Error>> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace =
        manifest.parent().and_then(Path::parent).ok_or("crates/runtime is not two levels down")?;
    let init_crate = workspace.join("crates/init");
    println!("cargo:rerun-if-changed={}", init_crate.join("src").display());
    println!("cargo:rerun-if-changed={}", init_crate.join("Cargo.toml").display());
    println!("cargo:rerun-if-env-changed=SANDPIT_INIT_BIN");
    println!("cargo:rerun-if-env-changed=SANDPIT_PROBE_BIN");

    let (init, probe) = match (env::var_os("SANDPIT_INIT_BIN"), env::var_os("SANDPIT_PROBE_BIN")) {
        (Some(i), Some(p)) => (PathBuf::from(i), PathBuf::from(p)),
        _ => build_static(workspace)?,
    };
    println!("cargo:rustc-env=SANDPIT_INIT_PATH={}", init.display());
    println!("cargo:rustc-env=SANDPIT_PROBE_PATH={}", probe.display());
    Ok(())
}

fn build_static(workspace: &Path) -> Result<(PathBuf, PathBuf), Box<dyn Error>> {
    let outer_target =
        env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace.join("target"));
    let target_dir = outer_target.join("static");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "-p", "sandpit-init", "--bins", "--target", TARGET])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER");
    let status = cmd.status()?;
    if !status.success() {
        return Err(format!("building the static sandpit-init failed ({status})").into());
    }
    let bin = target_dir.join(TARGET).join("release");
    Ok((bin.join("sandpit-init"), bin.join("sandpit-probe")))
}
