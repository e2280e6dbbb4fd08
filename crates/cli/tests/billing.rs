//! Metering across crashes: `sandpit serve` is killed with SIGKILL again and again while it
//! accrues charges (at random moments, and at failpoints just before and just after a charge is
//! written) while a sandbox runs, pauses, resumes and ends. At the end, what the ledger charged
//! equals, to the micro-unit and to the second, the usage computed at once from the sandbox's
//! persisted state transitions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Serve, Start};
use sandpit_billing::{Interval, Meter, Money, Rates, Resource, Spec, UsageKind};
use sandpit_store::{LedgerFilter, LedgerKind, SqliteStore, Store};
use sandpit_types::{SandboxId, SandboxState};
use time::OffsetDateTime;

/// Accrual every second; a paused disk dear enough that each second of it costs micro-units.
const CONFIG: &str = "[billing]\nmeter_interval_s = 1\n[billing.rates]\npaused_disk_per_gib_hour = \"36\"\n";

fn start(failpoint: Option<&str>) -> Start {
    Start { failpoint: failpoint.map(String::from), config: CONFIG.into(), ..Start::default() }
}

/// A pseudo-random delay in `lo..hi` ms (xorshift; the seed varies per run).
fn jitter(state: &mut u64, lo: u64, hi: u64) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    Duration::from_millis(lo + *state % (hi - lo))
}

/// Kills the server a few times at random moments and at the metering failpoints, leaving it
/// running (without a failpoint) at the end.
fn crash_repeatedly(s: &mut Serve, rng: &mut u64, rounds: usize) {
    for i in 0..rounds {
        match i % 3 {
            0 => {
                std::thread::sleep(jitter(rng, 300, 2500));
                s.kill();
                s.restart(start(None));
            }
            1 => {
                s.kill();
                s.respawn(start(Some("server.meter.after_charge")));
                s.expect_killed(Duration::from_secs(20));
                s.restart(start(None));
            }
            _ => {
                s.kill();
                s.respawn(start(Some("server.meter.before_charge")));
                s.expect_killed(Duration::from_secs(20));
                s.restart(start(None));
            }
        }
    }
}

/// Charged amount and seconds per resource.
type Totals = std::collections::BTreeMap<&'static str, (i64, u64)>;

fn resource_name(r: Resource) -> &'static str {
    match r {
        Resource::Gpu => "gpu",
        Resource::Cpu => "cpu",
        Resource::Memory => "memory",
        Resource::Storage => "storage",
    }
}

#[test]
fn sigkill_during_accrual_never_loses_or_doubles_a_second() {
    let mut rng = u64::from(OffsetDateTime::now_utc().nanosecond()) | 1;
    let mut s = Serve::start_with(start(None));
    let id = s.create_running(&["--keep-running", "--cpu", "4", "--memory", "1Gi"]);
    crash_repeatedly(&mut s, &mut rng, 6);
    s.ok(&["pause", &id]);
    crash_repeatedly(&mut s, &mut rng, 3);
    s.ok(&["resume", &id]);
    crash_repeatedly(&mut s, &mut rng, 3);
    s.ok(&["delete", &id]);

    let id: SandboxId = id.parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(SqliteStore::open(&s.data_dir().join("sandpit.db"))).unwrap();
    // Metering charges the last seconds (up to the end) within a few ticks.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let pending = runtime.block_on(store.sandboxes_to_meter()).unwrap();
        if !pending.iter().any(|m| m.sandbox.id == id) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the ended sandbox was never fully charged\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The usage of the persisted transitions, computed at once.
    let changes = runtime.block_on(store.state_changes(&id)).unwrap();
    let states: Vec<SandboxState> = changes.iter().map(|c| c.state).collect();
    assert_eq!(
        states,
        [
            SandboxState::Provisioning,
            SandboxState::Running,
            SandboxState::Paused,
            SandboxState::Running,
            SandboxState::Terminated
        ],
        "{changes:?}"
    );
    let mut intervals = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        let kind = match c.state {
            SandboxState::Running => UsageKind::Running,
            SandboxState::Paused => UsageKind::Paused,
            _ => continue,
        };
        let spec: Spec =
            serde_json::from_str(c.usage.as_deref().expect("a state change without usage")).unwrap();
        intervals.push(Interval { start: c.at, end: changes.get(i + 1).map(|n| n.at), kind, spec });
    }
    let rates = Rates { paused_disk_per_gib_hour: "36".parse().unwrap(), ..Rates::default() };
    let far = OffsetDateTime::now_utc() + time::Duration::days(1);
    let lines = Meter::new(&rates, id, ()).accrue_all(&intervals, OffsetDateTime::UNIX_EPOCH, far).unwrap();
    let mut expected = Totals::new();
    for l in &lines {
        let e = expected.entry(resource_name(l.resource)).or_default();
        e.0 += l.amount.micros();
        e.1 += l.seconds;
    }

    // What the ledger charged.
    let filter =
        LedgerFilter { kind: Some(LedgerKind::Charge), sandbox: Some(id), ..LedgerFilter::default() };
    let ledger = runtime.block_on(store.ledger(&filter)).unwrap();
    let mut charged = Totals::new();
    for l in &ledger {
        let name = match l.resource.as_deref().unwrap() {
            "cpu" => "cpu",
            "memory" => "memory",
            "storage" => "storage",
            other => panic!("unexpected resource {other}"),
        };
        let e = charged.entry(name).or_default();
        e.0 += l.amount;
        e.1 += l.seconds.unwrap();
    }
    let total = |t: &Totals| Money::from_micros(t.values().map(|v| v.0).sum());
    assert_eq!(total(&charged), total(&expected), "charged {charged:?}, usage {expected:?}");
    // Each second of CPU and of the paused disk costs whole micro-units, so no line of them was
    // zero (and left out): their seconds match to the second.
    for r in ["cpu", "storage"] {
        assert_eq!(charged.get(r).map(|v| v.1), expected.get(r).map(|v| v.1), "{r} seconds");
        assert!(expected[r].1 > 0, "no {r} seconds: {expected:?}");
    }
    assert_eq!(charged.get("memory").map(|v| v.0), expected.get("memory").map(|v| v.0));
    // And the wallet moved by exactly the charges.
    let project = runtime.block_on(store.project_by_name("default")).unwrap().unwrap();
    let wallet = runtime.block_on(store.wallet(project.id)).unwrap();
    assert_eq!(wallet.balance, 100_000_000 - total(&charged).micros());
    drop(store);
    s.stop();
}
