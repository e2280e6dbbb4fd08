//! Failures a user meets: no server, no or a wrong key, bad input. Each is one line that says
//! what to do, with a non-zero exit code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{KEY, Serve, free_port, sandpit, show, stderr, stdout};

#[test]
fn without_a_server_the_cli_says_to_start_one() {
    let home = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    let o = sandpit(home.path())
        .args(["list"])
        .env("SANDPIT_URL", &url)
        .env("SANDPIT_API_KEY", KEY)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(stderr(&o).trim(), format!("error: no server at {url} — start one with `sandpit serve`"));
}

#[test]
fn without_credentials_the_cli_says_where_it_looked() {
    let home = tempfile::tempdir().unwrap();
    let o = sandpit(home.path()).args(["list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = stderr(&o);
    assert!(err.contains("SANDPIT_API_KEY") && err.contains(".config/sandpit/credentials.json"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn bad_flag_values_are_refused_before_anything_is_sent_naming_the_flag() {
    let home = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (&["create", "--cpu", "lots"], &["--cpu", "not a valid CPU amount"]),
        (&["create", "--memory", "2Qi"], &["--memory", "not a valid size"]),
        (&["create", "--env", "NOEQUALS"], &["--env", "NAME=VALUE"]),
        (&["create", "--env", "1BAD=x"], &["--env", "1BAD"]),
        (&["create", "--gpu", "H100@30%"], &["--gpu", "fraction"]),
        (&["create", "--gpu", "H100:many"], &["--gpu", "count"]),
        (&["create", "--timeout", "soon"], &["--timeout", "not a duration"]),
        (&["list", "--state", "sleeping"], &["--state", "unknown state"]),
        (&["exec", "abc", "--timeout", "0", "--", "true"], &["--timeout", "at least one second"]),
    ];
    for (args, wanted) in cases {
        // No server and no key: the input is refused first.
        let o = sandpit(home.path()).args(*args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}\n{}", show(&o));
        let err = stderr(&o);
        for w in *wanted {
            assert!(err.contains(w), "{args:?}: {w:?} missing from\n{err}");
        }
    }
}

#[test]
fn a_wrong_key_is_refused_naming_where_it_was_read_from() {
    let s = Serve::start();
    let o = sandpit(&s.home())
        .args(["list"])
        .env("SANDPIT_URL", s.url())
        .env("SANDPIT_API_KEY", "sp_not_the_right_key_at_all_000000")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = stderr(&o);
    assert!(err.contains("refused the API key") && err.contains("$SANDPIT_API_KEY"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A wrong key in the credentials file names the file.
    let file = s.home().join(".config/sandpit/credentials.json");
    std::fs::write(&file, format!(r#"{{"url":"{}","api_key":"sp_wrong_wrong_wrong_wrong_wrong"}}"#, s.url()))
        .unwrap();
    let o = s.cli(&["list"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains(&file.display().to_string()), "{}", show(&o));
    std::fs::write(&file, format!(r#"{{"url":"{}","api_key":"{KEY}"}}"#, s.url())).unwrap();
    s.stop();
}

#[test]
fn errors_the_server_finds_are_one_line_naming_the_field_or_state() {
    let s = Serve::start();
    let o = s.cli(&["create", "--name", "Bad Name"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).starts_with("error: name must be"), "{}", show(&o));
    let o = s.cli(&["create", "--cpu", "1000"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("cpu must be between"), "{}", show(&o));
    let o = s.cli(&["create", "--gpu", "H100"]);
    assert_ne!(o.status.code(), Some(0), "{}", show(&o));
    assert!(stderr(&o).contains("H100"), "{}", show(&o));

    // A sandbox that fails to provision: --wait exits non-zero with the reason.
    let o = s.cli(&["create", "--wait", "--image", "127.0.0.1:1/missing:latest"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stdout(&o).contains("failed"), "{}", show(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: sandbox ") && err.contains("failed: ") && err.contains("missing"),
        "{err}"
    );

    let id = s.create_running(&[]);
    s.ok(&["pause", &id]);
    let o = s.cli(&["pause", &id]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(stderr(&o).trim(), "error: cannot pause a sandbox that is paused");
    let o = s.cli(&["exec", &id, "--", "true"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("paused"), "{}", show(&o));
    s.stop();
}
