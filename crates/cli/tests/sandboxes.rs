//! The client verbs against a real server: create, list, exec (streamed, with stdin and exit
//! codes), cp, pause and resume, timeout, logs, delete.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Serve, noise, show, stderr, stdout};

#[test]
fn create_wait_json_reports_a_running_sandbox_that_list_shows() {
    let s = Serve::start();
    let v = s.json(&[
        "create",
        "--wait",
        "--name",
        "web-1",
        "--metadata",
        "team=ml",
        "--cpu",
        "0.5",
        "--memory",
        "128Mi",
    ]);
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!((v["cpu"].as_str(), v["memory"].as_str()), (Some("500m"), Some("128Mi")));
    let id = v["id"].as_str().unwrap().to_string();
    let other = s.create_running(&[]);

    let table = s.ok(&["list"]);
    let header = table.lines().next().unwrap();
    for col in ["NAME/ID", "STATE", "IMAGE", "CPU", "MEM", "AGE", "ENDS"] {
        assert!(header.contains(col), "{col} missing: {table}");
    }
    let row = table.lines().find(|l| l.starts_with("web-1 ")).unwrap_or_else(|| panic!("{table}"));
    for cell in ["running", "sandpit/busybox:latest", "500m", "128Mi", "s ago", "in "] {
        assert!(row.contains(cell), "{cell:?} missing from {row:?}");
    }
    assert!(table.contains(&other), "{table}");

    let listed = s.json(&["list"]);
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&id.as_str()) && ids.contains(&other.as_str()), "{listed}");
    let by_label = s.json(&["list", "--metadata", "team:ml", "--state", "running,paused"]);
    assert_eq!(by_label.as_array().unwrap().len(), 1, "{by_label}");
    assert_eq!(by_label[0]["id"], id.as_str());
    assert_eq!(s.json(&["list", "--state", "paused"]), serde_json::json!([]));
    assert_eq!(s.json(&["get", "web-1"])["id"], id.as_str());
    s.stop();
}

#[test]
fn exec_prints_both_streams_and_exits_with_the_commands_code() {
    let s = Serve::start();
    let id = s.create_running(&[]);
    let o = s.cli(&["exec", &id, "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert_eq!((stdout(&o).as_str(), stderr(&o).as_str()), ("out\n", "err\n"));

    let o =
        s.cli(&["exec", &id, "-e", "GREETING=hi", "-w", "/tmp", "--", "sh", "-c", "echo $GREETING $(pwd)"]);
    assert_eq!(stdout(&o), "hi /tmp\n", "{}", show(&o));
    let o = s.cli(&["exec", &id, "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(o.status.code(), Some(137), "killed by signal 9: {}", show(&o));
    let o = s.cli(&["exec", &id, "--timeout", "1", "--", "sleep", "30"]);
    assert_eq!(o.status.code(), Some(124), "timed out: {}", show(&o));
    let o = s.cli(&["--json", "exec", &id, "--", "sh", "-c", "echo json; exit 5"]);
    assert_eq!(o.status.code(), Some(5), "{}", show(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((r["stdout"].as_str(), r["exit_code"].as_i64()), (Some("json\n"), Some(5)));
    s.stop();
}

#[test]
fn exec_streams_output_as_the_command_produces_it() {
    let s = Serve::start();
    let id = s.create_running(&[]);
    let started = Instant::now();
    let mut child = s
        .cmd(&["exec", &id, "--", "sh", "-c", "echo first; sleep 2; echo second"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let first_after = started.elapsed();
    assert_eq!(line, "first\n");
    assert!(first_after < Duration::from_millis(1500), "first line came after {first_after:?}");
    assert!(child.try_wait().unwrap().is_none(), "the CLI is still running when the first line arrives");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "second\n");
    assert!(child.wait().unwrap().success());
    assert!(started.elapsed() >= Duration::from_secs(2));
    s.stop();
}

#[test]
fn exec_forwards_piped_stdin() {
    let s = Serve::start();
    let id = s.create_running(&[]);
    let mut child =
        s.cmd(&["exec", &id, "--", "cat"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"hi\nthere\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(stdout(&o), "hi\nthere\n");
    // With nothing piped in (stdin is /dev/null) the command sees an empty input.
    assert_eq!(s.ok(&["exec", &id, "--", "wc", "-c"]).trim(), "0");
    s.stop();
}

#[test]
fn cp_copies_files_both_ways_byte_for_byte() {
    let s = Serve::start();
    let id = s.create_running(&[]);
    let data = noise(3 << 20);
    let local = s.path("up.bin");
    std::fs::write(&local, &data).unwrap();
    let local = local.to_str().unwrap();

    s.ok(&["cp", local, &format!("{id}:/tmp/data.bin")]);
    assert_eq!(
        s.ok(&["exec", &id, "--", "wc", "-c", "/tmp/data.bin"]).split_whitespace().next(),
        Some("3145728")
    );
    let down = s.path("down.bin");
    s.ok(&["cp", &format!("{id}:/tmp/data.bin"), down.to_str().unwrap()]);
    assert!(std::fs::read(&down).unwrap() == data, "downloaded bytes differ");

    // Into a directory, under the file's own name; and through stdin and stdout.
    s.ok(&["cp", local, &format!("{id}:/root/")]);
    let mut up = s.cmd(&["cp", "-", &format!("{id}:/tmp/piped.bin")]).stdin(Stdio::piped()).spawn().unwrap();
    up.stdin.take().unwrap().write_all(&data).unwrap();
    assert!(up.wait().unwrap().success());
    let o = s.cli(&["cp", &format!("{id}:/root/up.bin"), "-"]);
    assert!(o.status.success() && o.stdout == data, "stdout copy differs: status {:?}", o.status);
    let o = s.cli(&["cp", &format!("{id}:/tmp/piped.bin"), "-"]);
    assert!(o.status.success() && o.stdout == data, "stdin copy differs: status {:?}", o.status);

    let o = s.cli(&["cp", &format!("{id}:/tmp"), s.path("x").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is a directory") && stderr(&o).contains("not supported"), "{}", show(&o));
    let o = s.cli(&["cp", &format!("{id}:/no/such/file"), s.path("y").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/no/such/file") && stderr(&o).contains("not found"), "{}", show(&o));
    assert!(!s.path("y").exists() && !s.path(".y.sandpit-part").exists());
    s.stop();
}

#[test]
fn pause_and_resume_keep_files_written_before_the_pause() {
    let s = Serve::start();
    let id = s.create_running(&[]);
    s.ok(&["exec", &id, "--", "sh", "-c", "echo kept > /root/note"]);
    let out = s.ok(&["pause", &id]);
    assert!(out.starts_with(&format!("paused {id}")), "{out}");
    let v = s.json(&["get", &id]);
    assert_eq!(v["state"], "paused");
    assert!(s.ok(&["list"]).contains("left (paused)"));
    assert!(s.ok(&["resume", &id]).contains("running"));
    assert_eq!(s.ok(&["exec", &id, "--", "cat", "/root/note"]), "kept\n");
    s.stop();
}

#[test]
fn timeout_moves_the_deadline_and_the_sandbox_ends_when_it_passes() {
    let s = Serve::start();
    let id = s.create_running(&["--timeout", "1h"]);
    assert_eq!(s.json(&["get", &id])["timeout_s"], 3600);
    let out = s.ok(&["timeout", &id, "10m"]);
    assert!(out.contains("ends in 10m"), "{out}");
    let o = s.cli(&["timeout", &id, "9999999"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("timeout_s must be between"), "{}", show(&o));

    s.ok(&["timeout", &id, "1"]);
    let v = s.wait_for(&id, Duration::from_secs(10), |v| v["state"] == "terminated");
    assert_eq!(v["state_reason"], "timeout");
    s.stop();
}

#[test]
fn logs_print_what_the_sandboxs_command_wrote() {
    let s = Serve::start();
    let v = s.json(&["create", "--wait", "--", "sh", "-c", "echo hello; echo oops >&2"]);
    let id = v["id"].as_str().unwrap().to_string();
    // -f follows until the sandbox ends (its command exits at once).
    let o = s.cli(&["logs", "-f", &id]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(stdout(&o), "hello\n");
    assert!(stderr(&o).contains("oops\n"), "{}", show(&o));
    let v = s.json(&["get", &id]);
    assert_eq!((v["state"].as_str(), v["exit_code"].as_i64()), (Some("terminated"), Some(0)), "{v}");

    let o = s.cli(&["logs", &id]);
    assert_eq!(stdout(&o), "hello\n", "{}", show(&o));
    let lines = s.ok(&["--json", "logs", &id]);
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!((first["stream"].as_str(), first["text"].as_str()), (Some("stdout"), Some("hello\n")));
    s.stop();
}

#[test]
fn delete_is_idempotent_and_a_deleted_sandbox_is_gone() {
    let s = Serve::start();
    let id = s.create_running(&["--name", "short-lived"]);
    assert_eq!(s.ok(&["delete", "short-lived"]).trim(), "deleted short-lived");
    let o = s.cli(&["get", "short-lived"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(stderr(&o).trim(), "error: sandbox short-lived not found");
    // Deleting again succeeds, by name as by id, and the sandbox shows as ended.
    s.ok(&["delete", "short-lived"]);
    let o = s.cli(&["delete", "never-existed"]);
    assert!(!o.status.success() && stderr(&o).contains("not found"), "{}", show(&o));
    s.ok(&["delete", &id]);
    assert_eq!(s.json(&["get", &id])["state"], "terminated");
    let o = s.cli(&["exec", &id, "--", "true"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(common::containers(&s.data_dir()).is_empty());
    let o = s.cli(&["get", "aaaaaaaaaaaaaaaaaaaa"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("not found"), "{}", show(&o));
    s.stop();
}
