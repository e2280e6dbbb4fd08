//! Background processes from the CLI: `exec --detach`, `ps`, `attach`, `kill`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Serve, show, stdout};

#[test]
fn detached_commands_are_listed_followed_and_killed() {
    let s = Serve::start();
    let id = s.create_running(&["--keep-running"]);
    let pid = s.ok(&["exec", "--detach", &id, "--", "sh", "-c", "echo one; sleep 1; echo two; exit 3"]);
    let pid = pid.trim().to_string();
    assert!(pid.parse::<u32>().is_ok(), "not a pid: {pid:?}");
    let sleeper = s.ok(&["exec", "-d", &id, "--", "sleep", "600"]).trim().to_string();
    let ps = s.ok(&["ps", &id]);
    assert!(
        ps.lines().any(|l| l.starts_with(&sleeper) && l.contains("running") && l.contains("sleep 600")),
        "{ps}"
    );

    // `attach` prints the output (kept from the start) and exits with the command's code.
    let o = s.cli(&["attach", &id, &pid]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert_eq!(stdout(&o), "one\ntwo\n");

    let o = s.cli(&["kill", &id, &sleeper, "--signal", "KILL"]);
    assert!(o.status.success(), "{}", show(&o));
    let procs = s.json(&["ps", &id]);
    let p = procs
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"].as_u64().map(|n| n.to_string()).as_deref() == Some(sleeper.as_str()))
        .unwrap();
    assert_eq!((p["running"].as_bool(), p["signal"].as_i64()), (Some(false), Some(9)), "{p}");
    let o = s.cli(&["kill", &id, &sleeper, "--signal", "NOPE"]);
    assert!(!o.status.success() && common::stderr(&o).contains("unknown signal"), "{}", show(&o));
    s.stop();
}
