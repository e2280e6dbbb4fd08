//! `sandpit serve`: loads the configuration, starts the server (printing the first API key once,
//! on a first start), and answers until SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use sandpit_server::{ServeError, Server, ServerConfig};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use crate::cli::{LogFormat, ServeArgs};

/// The environment variable whose value becomes the first API key instead of a random one.
pub const BOOTSTRAP_KEY_VAR: &str = "SANDPIT_BOOTSTRAP_KEY";

/// `sandpit serve`.
pub async fn serve(a: &ServeArgs) -> anyhow::Result<ExitCode> {
    init_tracing(a.log_format);
    if !rustix::process::geteuid().is_root() {
        bail!(
            "sandpit serve must run as root: it creates the namespaces, mounts and cgroups of sandboxes (try `sudo sandpit serve`)"
        );
    }
    let mut config = ServerConfig::load(a.config.as_deref()).context("cannot load the configuration")?;
    if let Some(l) = a.listen {
        config.listen = l;
    }
    if let Some(d) = &a.data_dir {
        config.data_dir.clone_from(d);
    }
    let listen = config.listen;
    // Terminate requests that arrive during a slow first start are honoured once serving.
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let bootstrap_key = std::env::var(BOOTSTRAP_KEY_VAR).ok().filter(|k| !k.is_empty());
    let preset = bootstrap_key.is_some();
    let server = Server::start(config, bootstrap_key).await.map_err(startup_error)?;
    if let Some(b) = server.bootstrapped() {
        print_first_key(&b.api_key, &b.credentials_file, preset);
    }
    let listener = server.bind().await.map_err(startup_error)?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    };
    let scheme = if server.app().config.tls_cert_file.is_some() { "https" } else { "http" };
    tracing::info!(url = %format!("{scheme}://{listen}"), "ready");
    server.serve(listener, shutdown).await.map_err(startup_error)?;
    Ok(ExitCode::SUCCESS)
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Shows the new key once, on stdout, where it stands out from the log (which goes to stderr).
fn print_first_key(key: &str, file: &std::path::Path, preset: bool) {
    let rule = "=".repeat(72);
    println!("{rule}");
    if preset {
        println!("sandpit: first start. The API key is the one given in ${BOOTSTRAP_KEY_VAR}.");
    } else {
        println!("sandpit: first start. Your API key (shown only this once):");
        println!();
        println!("    {key}");
    }
    println!();
    println!("Saved to {} (mode 0600); the sandpit CLI on this machine reads it from there.", file.display());
    println!("{rule}");
}

/// A startup failure as one clear line.
fn startup_error(e: ServeError) -> anyhow::Error {
    match &e {
        ServeError::Listen { addr, source } if source.kind() == std::io::ErrorKind::AddrInUse => {
            anyhow::anyhow!(
                "cannot listen on {addr}: the address is in use (is another sandpit serve running? choose another with --listen)"
            )
        }
        ServeError::Listen { addr, source } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            anyhow::anyhow!("cannot listen on {addr}: permission denied")
        }
        _ => anyhow::Error::new(e).context("sandpit serve could not start"),
    }
}
