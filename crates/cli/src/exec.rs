//! `sandpit exec`: runs a command in a sandbox, writes its output as it comes, and exits with
//! its exit code (128 + signal when a signal ended it, 124 when its timeout did).

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;
use futures::StreamExt;
use sandpit_client::api::{ExecRequest, ExecStreamEvent};
use sandpit_client::{Client, decode_output};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::cli::ExecArgs;

/// Exit code of a command its timeout killed (as `timeout(1)`).
pub const TIMED_OUT: u8 = 124;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Signal number.
    pub signal: Option<i32>,
    /// Killed by its timeout.
    pub timed_out: bool,
}

impl Ending {
    /// The shell's convention: the code, `128 + signal`, or 124 for a timeout.
    pub fn exit_code(self) -> u8 {
        let code = if self.timed_out {
            i32::from(TIMED_OUT)
        } else {
            match (self.exit_code, self.signal) {
                (Some(c), _) => c,
                (None, Some(s)) => 128 + s,
                (None, None) => 1,
            }
        };
        u8::try_from(code.rem_euclid(256)).unwrap_or(1)
    }
}

/// `sandpit exec`.
pub async fn exec(client: &Client, a: &ExecArgs, json: bool) -> anyhow::Result<ExitCode> {
    let stdin = if a.no_stdin || std::io::stdin().is_terminal() { None } else { read_stdin().await? };
    let req = ExecRequest {
        command: Some(a.command.clone()),
        shell: None,
        env: a.env.iter().cloned().collect(),
        cwd: a.cwd.clone(),
        user: a.user.clone(),
        stdin,
        timeout_s: a.timeout.map(|d| d.as_secs()),
        background: false,
        keep_stdin_open: false,
    };
    if json {
        let r = client.exec(&a.id, &req).await?;
        crate::output::print_json(&r)?;
        let ending = Ending { exit_code: r.exit_code, signal: r.signal, timed_out: r.timed_out };
        return Ok(ExitCode::from(ending.exit_code()));
    }
    if a.detach {
        let r = client.exec(&a.id, &ExecRequest { background: true, ..req }).await?;
        println!("{}", r.pid);
        return Ok(ExitCode::SUCCESS);
    }
    let events = client.exec_stream(&a.id, &req).await?;
    relay(events).await
}

/// `sandpit attach ID PID`: a process's output until it exits; exits with its exit code.
pub async fn attach(client: &Client, a: &crate::cli::PidArgs) -> anyhow::Result<ExitCode> {
    let events = client.process_output(&a.id, a.pid).await?;
    relay(events).await
}

/// `sandpit ps ID`.
pub async fn ps(client: &Client, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let procs = client.processes(id).await?;
    if json {
        crate::output::print_json(&procs)?;
        return Ok(ExitCode::SUCCESS);
    }
    let now = time::OffsetDateTime::now_utc();
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled);
    t.set_header(["PID", "STATUS", "STARTED", "COMMAND"]);
    for p in &procs {
        let status = match (p.running, p.exit_code, p.signal) {
            (true, _, _) => "running".to_string(),
            (false, Some(c), _) => format!("exited {c}"),
            (false, None, Some(s)) => format!("signal {s}"),
            (false, None, None) => "exited".to_string(),
        };
        let mut cmd = p.argv.join(" ");
        if p.workload {
            cmd.push_str("  (workload)");
        }
        t.add_row([p.pid.to_string(), status, crate::output::ago(p.started_at, now), cmd]);
    }
    println!("{}", crate::output::trim_lines(&t.to_string()));
    Ok(ExitCode::SUCCESS)
}

/// `sandpit kill ID PID`.
pub async fn kill(client: &Client, a: &crate::cli::KillArgs) -> anyhow::Result<ExitCode> {
    client.signal_process(&a.id, a.pid, &a.signal).await?;
    Ok(ExitCode::SUCCESS)
}

/// Prints a command's output events as they come; the exit code is the command's.
async fn relay(mut events: sandpit_client::ApiStream<ExecStreamEvent>) -> anyhow::Result<ExitCode> {
    let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
    while let Some(ev) = events.next().await {
        match ev? {
            ExecStreamEvent::Started { .. } => {}
            ExecStreamEvent::Stdout { data } => write_now(&mut out, &decode_output(&data)?).await?,
            ExecStreamEvent::Stderr { data } => write_now(&mut err, &decode_output(&data)?).await?,
            ExecStreamEvent::Exited { exit_code, signal, timed_out } => {
                let ending = Ending { exit_code, signal, timed_out };
                if timed_out {
                    eprintln!("sandpit: the command was killed after its timeout");
                }
                return Ok(ExitCode::from(ending.exit_code()));
            }
            ExecStreamEvent::Error { code, message } => {
                anyhow::bail!("exec failed: {message} ({code})")
            }
        }
    }
    anyhow::bail!("the server ended the exec stream before the command exited")
}

/// The whole of this process's standard input, as the text the API takes (`None` when empty).
async fn read_stdin() -> anyhow::Result<Option<String>> {
    let mut buf = Vec::new();
    tokio::io::stdin().read_to_end(&mut buf).await.context("reading standard input")?;
    if buf.is_empty() {
        return Ok(None);
    }
    let text = String::from_utf8(buf)
        .map_err(|_| anyhow::anyhow!("standard input is not UTF-8 text, which is all exec can send (use `sandpit cp` for binary data, or --no-stdin)"))?;
    Ok(Some(text))
}

async fn write_now<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> anyhow::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_conventions() {
        let e = |exit_code, signal, timed_out| Ending { exit_code, signal, timed_out }.exit_code();
        assert_eq!(e(Some(3), None, false), 3);
        assert_eq!(e(None, Some(9), false), 137);
        assert_eq!(e(None, Some(9), true), 124);
        assert_eq!(e(Some(0), None, false), 0);
        assert_eq!(e(Some(-1), None, false), 255);
    }
}
