//! `sandpit logs`: the workload's log, stdout entries to stdout and the others to stderr; with
//! `-f`, new entries as they are written until the sandbox ends.

use std::io::Write as _;
use std::process::ExitCode;

use futures::StreamExt;
use sandpit_client::Client;
use sandpit_client::api::{LogEntry, LogStreamView};

use crate::cli::LogsArgs;

/// `sandpit logs`.
pub async fn logs(client: &Client, a: &LogsArgs, json: bool) -> anyhow::Result<ExitCode> {
    if a.follow {
        let mut entries = client.follow_logs(&a.id, 0).await?;
        while let Some(e) = entries.next().await {
            print_entry(&e?, json)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut offset = 0;
    loop {
        let page = client.logs(&a.id, offset, None).await?;
        if page.skipped && offset == 0 && !json {
            eprintln!("[sandpit] older log entries were dropped (the log's size bound)");
        }
        for e in &page.entries {
            print_entry(e, json)?;
        }
        if page.entries.is_empty() || page.next_offset <= offset {
            return Ok(ExitCode::SUCCESS);
        }
        offset = page.next_offset;
    }
}

/// One entry: its text as written (JSON: one object per line).
fn print_entry(e: &LogEntry, json: bool) -> anyhow::Result<()> {
    if json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, e)?;
        out.write_all(b"\n")?;
        return Ok(out.flush()?);
    }
    match e.stream {
        LogStreamView::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(e.text.as_bytes())?;
            out.flush()?;
        }
        LogStreamView::Stderr => {
            let mut err = std::io::stderr().lock();
            err.write_all(e.text.as_bytes())?;
        }
        LogStreamView::System => eprintln!("[sandpit] {}", e.text.trim_end()),
    }
    Ok(())
}
