//! `sandpit serve` as an operator runs it: first start, the bootstrap key, shutdown, startup
//! errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{KEY, Serve, Start, sandpit, show, stderr, stdout};

#[test]
fn first_start_prints_the_key_once_and_the_cli_then_works_without_variables() {
    let mut s = Serve::start_with(Start { bootstrap_key: None, ..Start::default() });
    let printed = s.stdout();
    let key = printed
        .split_whitespace()
        .find(|w| w.starts_with("sp_"))
        .unwrap_or_else(|| panic!("no key on stdout: {printed}"))
        .to_string();
    let file = s.home().join(".config/sandpit/credentials.json");
    assert!(
        printed.contains(&file.display().to_string()),
        "the banner names the credentials file: {printed}"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "credentials file mode");
    let creds: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(creds["api_key"], key.as_str());
    assert_eq!(creds["url"], s.url());

    // No SANDPIT_* variables: the CLI reads HOME's credentials file.
    let out = s.ok(&["projects"]);
    assert!(out.contains("default"), "{out}");

    s.restart(Start { bootstrap_key: None, ..Start::default() });
    assert_eq!(s.stdout().matches(&key).count(), 1, "the key is printed once, on the first start only");
    assert!(s.ok(&["projects"]).contains("default"));
    s.stop();
}

#[test]
fn the_bootstrap_key_from_the_environment_becomes_the_api_key() {
    let s = Serve::start();
    let creds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.home().join(".config/sandpit/credentials.json")).unwrap())
            .unwrap();
    assert_eq!(creds["api_key"], KEY);
    assert!(!s.stdout().contains(KEY), "a key the operator chose is not echoed");
    // The key works from the environment alone, with another HOME.
    let elsewhere = tempfile::tempdir().unwrap();
    let o = sandpit(elsewhere.path())
        .args(["--json", "projects"])
        .env("SANDPIT_URL", s.url())
        .env("SANDPIT_API_KEY", KEY)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()[0]["name"], "default");
    s.stop();
}

#[test]
fn sigterm_stops_serve_promptly_with_exit_code_zero_and_sandboxes_survive_it() {
    let mut s = Serve::start();
    let id = s.create_running(&[]);
    s.ok(&["exec", &id, "--", "sh", "-c", "echo kept > /root/f"]);
    let (status, took) = s.terminate();
    assert!(status.success(), "serve exited with {status}\n{}", s.log());
    assert!(took < Duration::from_secs(5), "serve took {took:?} to stop");
    // The next start adopts the sandbox.
    s.restart(Start::default());
    assert_eq!(s.ok(&["exec", &id, "--", "cat", "/root/f"]), "kept\n");
    s.stop();
}

#[test]
fn serve_on_a_port_in_use_fails_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = common::traversable_dir();
    let o = sandpit(&dir.path().join("home"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("SANDPIT_BOOTSTRAP_KEY", KEY)
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", show(&o));
    let err = stderr(&o);
    assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("in use"), "{}", show(&o));
    assert!(!stdout(&o).contains(KEY));
}

#[test]
fn serve_as_a_normal_user_says_it_needs_root() {
    let dir = common::traversable_dir();
    let Ok(o) = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", common::bin(), "serve"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("HOME", dir.path())
        .output()
    else {
        eprintln!("setpriv is not installed: skipped");
        return;
    };
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("must run as root"), "{}", show(&o));
    assert!(!dir.path().join("data").exists(), "nothing is created before the check");
}
