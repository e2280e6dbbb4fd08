//! Crash safety of the control plane: `sandpit serve` is killed with SIGKILL at failpoints inside
//! create, pause, resume and delete (in the server and in the runtime below it). After each
//! restart every sandbox must be in a state that matches the host, nothing may be orphaned
//! (container, mount, cgroup, directory), and the API must tell the truth.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Serve, Start, containers};
use serde_json::Value;

/// Every server here has one simulated H100, and sandboxes take quarters of it, so that
/// reservations are recovered too.
fn start(fp: Option<&str>) -> Start {
    Start { failpoint: fp.map(String::from), simulate_gpus: Some("H100x1".into()), ..Start::default() }
}

/// Mount points under the server's sandboxes directory.
fn sandbox_mounts(data: &Path) -> Vec<String> {
    let root = data.join("runtime/sandboxes");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(&root))
        .map(String::from)
        .collect()
}

/// sandpit's cgroups on the host.
fn cgroups() -> Vec<String> {
    let mut out = Vec::new();
    for ctl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let dir = ctl.path().join("sandpit");
        for c in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if c.path().is_dir() {
                out.push(c.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The API and the host agree, and nothing is orphaned.
fn assert_consistent(s: &Serve, what: &str) {
    let data = s.data_dir();
    // Provisioning finishes one way or the other.
    let mut list: Vec<Value>;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        list = s.json(&["list", "--all"]).as_array().unwrap().clone();
        if list.iter().all(|v| v["state"] != "provisioning") || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let running: Vec<String> = list
        .iter()
        .filter(|v| v["state"] == "running")
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    for v in &list {
        let id = v["id"].as_str().unwrap();
        let dir = data.join("runtime/sandboxes").join(id);
        match v["state"].as_str().unwrap() {
            "running" => {
                let out = s.ok(&["exec", id, "--", "cat", "/root/mark"]);
                assert_eq!(out, "here\n", "{what}: running sandbox {id} lost its file");
            }
            "paused" => {
                assert!(
                    !containers(&data).contains(&id.to_string()),
                    "{what}: paused {id} still has a container"
                );
                assert!(dir.join("disk.img").exists(), "{what}: paused {id} lost its disk");
            }
            "terminated" | "failed" => {
                assert!(!dir.exists(), "{what}: ended {id} left {}", dir.display());
            }
            other => panic!("{what}: {id} is {other} after recovery"),
        }
    }
    let mut conts = containers(&data);
    conts.sort();
    let mut want = running.clone();
    want.sort();
    assert_eq!(conts, want, "{what}: containers on the host vs running in the API");
    for m in sandbox_mounts(&data) {
        assert!(running.iter().any(|id| m.contains(id.as_str())), "{what}: orphaned mount {m}");
    }
    for cg in cgroups() {
        if cg.len() == 20 && cg.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b)) {
            // Only this server's sandboxes are checked; other tests run beside this one.
            let ours = list.iter().any(|v| v["id"] == cg.as_str());
            assert!(!ours || running.contains(&cg), "{what}: orphaned cgroup {cg}");
        }
    }
    // Reservations: one quarter of the GPU per running sandbox, none for the others.
    let gpus = s.json(&["gpus"]);
    let free: u64 = gpus.as_array().unwrap().iter().map(|g| g["free_25"].as_u64().unwrap()).sum();
    assert_eq!(
        free,
        4 - running.len() as u64,
        "{what}: free quarters {gpus} with {} running: {list:?}\n{}",
        running.len(),
        s.log()
    );
    for d in std::fs::read_dir(data.join("runtime/sandboxes")).unwrap().flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        let state =
            list.iter().find(|v| v["id"] == name.as_str()).map(|v| v["state"].as_str().unwrap().to_string());
        assert!(
            matches!(state.as_deref(), Some("running" | "paused")),
            "{what}: orphaned directory {name} ({state:?})"
        );
    }
}

/// A running sandbox with `/root/mark`.
fn marked(s: &Serve) -> String {
    let id = s.create_running(&["--memory", "128Mi", "--gpu", "H100@25%"]);
    s.ok(&["exec", id.as_str(), "--", "sh", "-c", "echo here > /root/mark"]);
    id
}

#[test]
fn a_crash_during_create_recovers_to_a_true_state() {
    let mut s = Serve::start_with(start(None));
    for fp in [
        "server.create.after_insert",
        "create.after_record",
        "start.after_disk",
        "start.after_rootfs",
        "start.after_runtime",
        "create.after_running",
        "server.provision.after_backend",
    ] {
        s.restart(start(Some(fp)));
        let _ = s.cli(&[
            "create",
            "--memory",
            "128Mi",
            "--gpu",
            "H100@25%",
            "--",
            "sh",
            "-c",
            "echo here > /root/mark; exec sleep 600",
        ]);
        s.expect_killed(Duration::from_secs(30));
        s.restart(start(None));
        // The create either finished or is finished now; the workload wrote its mark.
        std::thread::sleep(Duration::from_millis(300));
        assert_consistent(&s, fp);
        // Make room on the GPU for the next round.
        s.delete_live_sandboxes();
        assert_consistent(&s, fp);
    }
    s.stop();
}

#[test]
fn a_crash_during_pause_or_resume_recovers_to_a_true_state() {
    let mut s = Serve::start_with(start(None));
    for fp in
        ["server.pause.after_desired", "pause.after_record", "pause.after_stop", "server.pause.after_backend"]
    {
        let id = marked(&s);
        s.restart(start(Some(fp)));
        let _ = s.cli(&["pause", id.as_str()]);
        s.expect_killed(Duration::from_secs(30));
        s.restart(start(None));
        assert_consistent(&s, fp);
        // Whatever it became, it can go on: resume if paused, and the file is there.
        let v = s.json(&["get", id.as_str()]);
        if v["state"] == "paused" {
            s.ok(&["resume", id.as_str()]);
        }
        assert_eq!(s.ok(&["exec", id.as_str(), "--", "cat", "/root/mark"]), "here\n", "{fp}");
        s.ok(&["delete", id.as_str()]);
        assert_consistent(&s, fp);
    }
    for fp in [
        "server.resume.after_desired",
        "resume.after_record",
        "start.after_rootfs",
        "start.after_runtime",
        "server.resume.after_backend",
    ] {
        let id = marked(&s);
        s.ok(&["pause", id.as_str()]);
        s.restart(start(Some(fp)));
        let _ = s.cli(&["resume", id.as_str()]);
        s.expect_killed(Duration::from_secs(30));
        s.restart(start(None));
        assert_consistent(&s, fp);
        let v = s.json(&["get", id.as_str()]);
        if v["state"] == "paused" {
            s.ok(&["resume", id.as_str()]);
        }
        assert_eq!(s.ok(&["exec", id.as_str(), "--", "cat", "/root/mark"]), "here\n", "{fp}");
        s.ok(&["delete", id.as_str()]);
        assert_consistent(&s, fp);
    }
    s.stop();
}

#[test]
fn a_crash_during_delete_finishes_the_delete() {
    let mut s = Serve::start_with(start(None));
    for fp in [
        "server.delete.after_desired",
        "delete.after_record",
        "delete.after_stop",
        "server.end.after_destroy",
    ] {
        let id = marked(&s);
        s.restart(start(Some(fp)));
        let _ = s.cli(&["delete", id.as_str()]);
        s.expect_killed(Duration::from_secs(30));
        s.restart(start(None));
        assert_consistent(&s, fp);
        let v = s.json(&["get", id.as_str()]);
        assert_eq!(v["state"], "terminated", "{fp}: a delete that was asked for is finished: {v}");
    }
    s.stop();
}
