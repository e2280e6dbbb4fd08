//! Human output: sandbox tables and details, relative times ("3m ago", "in 57m"), and JSON.

use std::fmt::Write as _;

use comfy_table::presets::NOTHING;
use comfy_table::{ContentArrangement, Table};
use sandpit_types::SandboxState;
use sandpit_types::api::{GpuRequest, ProjectView, SandboxView};
use serde::Serialize;
use time::OffsetDateTime;

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A span as its largest one or two units: `45s`, `3m`, `2h5m`, `3d4h`.
pub fn short_span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h{m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d{h}h"),
    }
}

/// Whole seconds from `a` to `b`, rounded to the nearest (0 when `b` is earlier): a deadline
/// set to ten minutes a few milliseconds ago still reads "in 10m".
fn secs_between(a: OffsetDateTime, b: OffsetDateTime) -> u64 {
    u64::try_from((b - a + time::Duration::milliseconds(500)).whole_seconds()).unwrap_or(0)
}

/// `3m ago` for a past time.
pub fn ago(t: OffsetDateTime, now: OffsetDateTime) -> String {
    format!("{} ago", short_span(secs_between(t, now)))
}

/// `in 57m` for a future time (`now` once it passed).
pub fn until(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let s = secs_between(now, t);
    if s == 0 { "now".into() } else { format!("in {}", short_span(s)) }
}

/// When a sandbox ends: `in 57m` while running, `57m left` while paused.
pub fn ends(v: &SandboxView, now: OffsetDateTime) -> String {
    match (v.state, v.ends_at, v.remaining_s) {
        (SandboxState::Running, Some(t), _) => until(t, now),
        (SandboxState::Paused, _, Some(r)) => format!("{} left (paused)", short_span(r)),
        _ => "-".into(),
    }
}

/// `H100 x2 @50%`.
pub fn gpu(g: &GpuRequest) -> String {
    let mut s = g.gpu_type.clone();
    if g.count != 1 {
        let _ = write!(s, " x{}", g.count);
    }
    if g.fraction != 100 {
        let _ = write!(s, " @{}%", g.fraction);
    }
    s
}

/// The list table: NAME/ID, STATE, IMAGE, CPU, MEM, AGE, ENDS.
pub fn sandbox_table(items: &[SandboxView], now: OffsetDateTime) -> String {
    let mut t = Table::new();
    t.load_style(NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    t.set_header(["NAME/ID", "STATE", "IMAGE", "CPU", "MEM", "AGE", "ENDS"]);
    for v in items {
        let name = v.name.clone().unwrap_or_else(|| v.id.to_string());
        let mut cpu = v.cpu.to_string();
        if let Some(g) = &v.gpu {
            let _ = write!(cpu, " + {}", gpu(g));
        }
        t.add_row([
            name,
            v.state.to_string(),
            v.image.clone(),
            cpu,
            v.memory.to_string(),
            ago(v.created_at, now),
            ends(v, now),
        ]);
    }
    trim_lines(&t.to_string())
}

/// The projects table.
pub fn project_table(items: &[ProjectView], now: OffsetDateTime) -> String {
    let mut t = Table::new();
    t.load_style(NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    t.set_header(["NAME", "CREATED"]);
    for p in items {
        t.add_row([p.name.clone(), ago(p.created_at, now)]);
    }
    trim_lines(&t.to_string())
}

/// GPU types with what is free.
pub fn gpu_table(items: &[sandpit_client::api::GpuTypeView]) -> String {
    let mut t = Table::new();
    t.load_style(NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    t.set_header(["TYPE", "MEMORY", "TOTAL", "FREE WHOLE", "FREE 25%", "FREE 50%", "FREE 75%", ""]);
    for g in items {
        t.add_row([
            g.gpu_type.clone(),
            g.memory.to_string(),
            g.total.to_string(),
            g.free_whole.to_string(),
            g.free_25.to_string(),
            g.free_50.to_string(),
            g.free_75.to_string(),
            if g.simulated { "simulated".to_string() } else { String::new() },
        ]);
    }
    trim_lines(&t.to_string())
}

/// A size for people: `2.03 MiB`.
pub fn human_bytes(b: sandpit_types::ByteSize) -> String {
    indicatif::HumanBytes(b.bytes()).to_string()
}

/// comfy-table pads every cell, the last one too; trailing blanks only get in the way.
pub fn trim_lines(s: &str) -> String {
    s.lines().map(|l| l.trim_end().strip_prefix(' ').unwrap_or(l.trim_end())).collect::<Vec<_>>().join("\n")
}

/// One sandbox, a field per line.
pub fn sandbox_details(v: &SandboxView, now: OffsetDateTime) -> String {
    let mut rows: Vec<(&str, String)> = vec![("id", v.id.to_string())];
    if let Some(n) = &v.name {
        rows.push(("name", n.clone()));
    }
    rows.push(("project", v.project.clone()));
    let mut state = v.state.to_string();
    if let Some(r) = v.state_reason.as_deref().filter(|r| *r != v.state.as_str()) {
        let _ = write!(state, " ({r})");
    }
    rows.push(("state", state));
    if let Some(c) = v.exit_code {
        rows.push(("exit code", c.to_string()));
    }
    rows.push(("image", v.image.clone()));
    rows.push(("cpu", v.cpu.to_string()));
    rows.push(("memory", v.memory.to_string()));
    if let Some(g) = &v.gpu {
        rows.push(("gpu", gpu(g)));
    }
    rows.push(("timeout", short_span(v.timeout_s)));
    rows.push(("created", ago(v.created_at, now)));
    match v.state {
        SandboxState::Running | SandboxState::Paused => rows.push(("ends", ends(v, now))),
        _ => {}
    }
    if let Some(t) = v.terminated_at {
        rows.push(("ended", ago(t, now)));
    }
    if v.keep_running {
        rows.push(("keep running", "yes".into()));
    }
    if !v.metadata.is_empty() {
        let labels: Vec<String> = v.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rows.push(("metadata", labels.join(", ")));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, val) in rows {
        let _ = writeln!(out, "{:<width$} {val}", format!("{k}:"), width = width);
    }
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap() + time::Duration::minutes(minutes)
    }

    #[test]
    fn spans_show_their_two_largest_units() {
        assert_eq!(short_span(45), "45s");
        assert_eq!(short_span(180), "3m");
        assert_eq!(short_span(3600), "1h");
        assert_eq!(short_span(3720), "1h2m");
        assert_eq!(short_span(90_000), "1d1h");
    }

    #[test]
    fn relative_times_read_as_ago_and_in() {
        let now = at(0);
        assert_eq!(ago(at(-3), now), "3m ago");
        assert_eq!(until(at(57), now), "in 57m");
        assert_eq!(until(at(-60), now), "now");
    }

    #[test]
    fn gpu_shows_count_and_fraction_only_when_not_default() {
        let g = GpuRequest { gpu_type: "H100".into(), count: 2, fraction: 50 };
        assert_eq!(gpu(&g), "H100 x2 @50%");
        assert_eq!(gpu(&GpuRequest { gpu_type: "T4".into(), count: 1, fraction: 100 }), "T4");
    }
}
