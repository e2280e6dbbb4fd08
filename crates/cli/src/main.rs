//! `sandpit`: the server (`sandpit serve`) and the client verbs in one binary.

mod accounts;
mod cli;
mod cp;
mod exec;
mod failure;
mod image;
mod logs;
mod output;
mod parse;
mod sandbox;
mod serve;

use std::process::ExitCode;

use clap::Parser;
use sandpit_client::{Client, Credentials};

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match &cli.command {
        Command::Serve(_) => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_current_thread().enable_all().build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(cli));
    // Blocking reads (stdin) must not hold the process open after the answer is printed.
    runtime.shutdown_background();
    code
}

/// A password from standard input, without the line end.
pub(crate) fn read_password_stdin() -> anyhow::Result<String> {
    use anyhow::Context as _;
    use std::io::Read as _;
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).context("read the password from stdin")?;
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        anyhow::bail!("no password on standard input");
    }
    Ok(s)
}

async fn run(cli: Cli) -> ExitCode {
    let local = match &cli.command {
        Command::Image(cli::ImageCommand::Build(a)) => Some(image::build(a).await),
        Command::Image(cli::ImageCommand::Import(a)) => Some(image::import(a).await),
        _ => None,
    };
    if let Some(result) = local {
        return match result {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Serve(a) = &cli.command {
        return match serve::serve(a).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {}", failure::explain(&e, None));
                ExitCode::FAILURE
            }
        };
    }
    let creds = match Credentials::discover() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match Client::new(&creds.url, &creds.api_key) {
        Ok(client) => dispatch(&client, &cli).await,
        Err(e) => Err(anyhow::Error::new(e).context(format!("server URL from {}", creds.url_source))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", failure::explain(&e, Some(&creds)));
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(client: &Client, cli: &Cli) -> anyhow::Result<ExitCode> {
    let json = cli.json;
    match &cli.command {
        // Handled in `run`, before credentials are looked for.
        Command::Serve(_) => anyhow::bail!("serve is not a client verb"),
        Command::Create(a) => sandbox::create(client, a, json).await,
        Command::List(a) => sandbox::list(client, a, json).await,
        Command::Get(a) => sandbox::get(client, &a.id, json).await,
        Command::Pause(a) => sandbox::pause(client, &a.id, json).await,
        Command::Resume(a) => sandbox::resume(client, &a.id, json).await,
        Command::Delete(a) => sandbox::delete(client, &a.id, json).await,
        Command::Timeout(a) => sandbox::timeout(client, a, json).await,
        Command::Exec(a) => exec::exec(client, a, json).await,
        Command::Ps(a) => exec::ps(client, &a.id, json).await,
        Command::Attach(a) => exec::attach(client, a).await,
        Command::Kill(a) => exec::kill(client, a).await,
        Command::Logs(a) => logs::logs(client, a, json).await,
        Command::Cp(a) => cp::cp(client, a, json).await,
        Command::Projects => sandbox::projects(client, json).await,
        Command::Gpus => sandbox::gpus(client, json).await,
        Command::Whoami => accounts::whoami(client, json).await,
        Command::User(c) => accounts::user(client, c, json).await,
        Command::Project(c) => accounts::project(client, c, json).await,
        Command::Key(c) => accounts::key(client, c, json).await,
        Command::Kyc(c) => accounts::kyc(client, c, json).await,
        Command::Wallet(c) => accounts::wallet(client, c, json).await,
        Command::Estimate(a) => accounts::estimate(client, a, json).await,
        Command::Usage(a) => accounts::usage(client, a, json).await,
        Command::Image(c) => image::run(client, c, json).await,
    }
}

#[cfg(test)]
mod tests {
    use sandpit_client::CredentialsFile;
    use sandpit_server::config::Credentials as ServedCredentials;

    #[test]
    fn the_cli_reads_the_credentials_file_that_serve_writes() {
        let served = ServedCredentials { url: "http://127.0.0.1:7700".into(), api_key: "sp_x".into() };
        let read: CredentialsFile = serde_json::from_value(serde_json::to_value(&served).unwrap()).unwrap();
        assert_eq!((read.url.as_str(), read.api_key.as_str()), ("http://127.0.0.1:7700", "sp_x"));
        assert_eq!(
            sandpit_client::default_credentials_path(),
            Some(sandpit_server::config::default_credentials_path()),
            "both sides use the same path"
        );
    }
}
