//! The accounts and billing verbs against a real `sandpit serve`: users, projects, members, keys,
//! KYC, the wallet, the estimate and the usage breakdown, as an administrator and as a new user.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Output;

use common::{Serve, show, stderr, stdout};
use serde_json::Value;

/// Runs the CLI with another user's key.
fn as_key(s: &Serve, key: &str, args: &[&str]) -> Output {
    s.cmd(args).env("SANDPIT_API_KEY", key).output().unwrap()
}

fn ok_as(s: &Serve, key: &str, args: &[&str]) -> String {
    let o = as_key(s, key, args);
    assert!(o.status.success(), "sandpit {args:?} failed\n{}", show(&o));
    stdout(&o)
}

fn json_as(s: &Serve, key: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok_as(s, key, &all)).unwrap()
}

fn fails_as(s: &Serve, key: &str, args: &[&str]) -> String {
    let o = as_key(s, key, args);
    assert!(!o.status.success(), "sandpit {args:?} succeeded\n{}", show(&o));
    stderr(&o)
}

#[test]
fn a_new_user_is_gated_by_kyc_and_funds_and_the_admin_manages_it_all_from_the_cli() {
    let s = Serve::start();

    // The bootstrap admin: verified, owner of `default`.
    let me = s.json(&["whoami"]);
    assert_eq!((me["user"]["role"].as_str(), me["user"]["kyc"].as_str()), (Some("admin"), Some("verified")));
    assert!(s.ok(&["whoami"]).contains("kyc:      verified"));

    // A new user with their first key, shown once.
    let created = s.json(&["user", "create", "alice"]);
    let alice = created["api_key"].as_str().unwrap().to_string();
    assert!(alice.starts_with("sp_"), "{created}");
    let users = s.ok(&["user", "ls"]);
    assert!(users.lines().any(|l| l.starts_with("alice") && l.contains("unverified")), "{users}");
    // Not an administrator: cannot list or create users.
    let e = fails_as(&s, &alice, &["user", "create", "mallory"]);
    assert!(e.contains("admin"), "{e}");

    // A project for alice, with an empty wallet.
    assert!(s.ok(&["project", "create", "ml"]).contains("created project ml"));
    assert!(s.ok(&["project", "add-member", "ml", "alice"]).contains("alice is now a member of ml"));
    let members = s.ok(&["project", "members", "ml"]);
    assert!(members.lines().any(|l| l.starts_with("alice") && l.contains("member")), "{members}");
    let projects = json_as(&s, &alice, &["project", "ls"]);
    assert_eq!(projects.as_array().unwrap().len(), 1, "alice sees only ml: {projects}");
    assert_eq!((projects[0]["name"].as_str(), projects[0]["role"].as_str()), (Some("ml"), Some("member")));

    // Unverified: no sandbox, and the error says how to start.
    let e = fails_as(&s, &alice, &["create", "--project", "ml"]);
    assert!(e.contains("sandpit kyc start"), "{e}");
    let k = json_as(&s, &alice, &["kyc", "start"]);
    assert_eq!(k["status"], "pending", "{k}");
    assert!(k["reference"].as_str().is_some_and(|r| !r.is_empty()), "{k}");
    assert!(ok_as(&s, &alice, &["kyc", "status"]).contains("alice: pending"));
    // Only an administrator sets the status.
    fails_as(&s, &alice, &["kyc", "set", "alice", "verified"]);
    assert!(s.ok(&["kyc", "set", "alice", "verified"]).contains("alice: verified"));
    let e = s.cli(&["kyc", "set", "alice", "approved"]);
    assert!(!e.status.success() && stderr(&e).contains("status"), "{}", show(&e));

    // Verified but the wallet is empty: 402 with how to fix it.
    let e = fails_as(&s, &alice, &["create", "--project", "ml"]);
    assert!(e.contains("wallet of project ml is empty") && e.contains("sandpit wallet credit ml"), "{e}");
    fails_as(&s, &alice, &["wallet", "credit", "ml", "1000"]);
    let w = s.json(&["wallet", "credit", "ml", "12.5", "--note", "November"]);
    assert_eq!(
        (w["balance"].as_str(), w["balance_micros"].as_i64()),
        (Some("12.500000"), Some(12_500_000)),
        "{w}"
    );
    let e = s.cli(&["wallet", "credit", "ml", "-3"]);
    assert!(!e.status.success(), "a negative credit: {}", show(&e));
    // alice's only project is the default for `wallet show`.
    let shown = ok_as(&s, &alice, &["wallet", "show"]);
    assert!(shown.contains("project:        ml") && shown.contains("12.500000 USD"), "{shown}");
    let ledger = json_as(&s, &alice, &["wallet", "ledger"]);
    let lines = ledger.as_array().unwrap();
    assert_eq!(lines.len(), 1, "{ledger}");
    assert_eq!((lines[0]["kind"].as_str(), lines[0]["note"].as_str()), (Some("credit"), Some("November")));
    assert!(ok_as(&s, &alice, &["wallet", "ledger", "ml"]).contains("November"));
    // The admin sees several projects: `wallet show` wants a name.
    let e = s.cli(&["wallet", "show"]);
    assert!(!e.status.success() && stderr(&e).contains("name the project"), "{}", show(&e));
    let w = s.json(&["wallet", "set-low", "ml", "20"]);
    assert_eq!((w["low_threshold"].as_str(), w["low"].as_bool()), (Some("20.000000"), Some(true)), "{w}");

    // Keys: a key restricted to ml, listed without its secret, revoked, then refused.
    let k = json_as(&s, &alice, &["key", "create", "ci", "--project", "ml"]);
    let ci = k["api_key"].as_str().unwrap().to_string();
    let id = k["key"]["id"].as_i64().unwrap().to_string();
    let listed = ok_as(&s, &alice, &["key", "ls"]);
    assert!(listed.contains("ci") && listed.contains("ml") && !listed.contains(&ci), "{listed}");
    let me = json_as(&s, &ci, &["whoami"]);
    assert_eq!((me["user"]["name"].as_str(), me["key"]["project"].as_str()), (Some("alice"), Some("ml")));
    assert!(ok_as(&s, &alice, &["key", "revoke", &id]).contains(&format!("revoked key {id}")));
    let e = fails_as(&s, &ci, &["whoami"]);
    assert!(e.contains("refused the API key"), "{e}");

    // The estimate adds up, and names a bad GPU type.
    let est = s.json(&["estimate", "--cpu", "2", "--memory", "4Gi"]);
    let f = |k: &str| est[k].as_str().unwrap().parse::<f64>().unwrap();
    assert!(f("cpu_per_hour") > 0.0 && f("memory_per_hour") > 0.0, "{est}");
    assert!(
        (f("cpu_per_hour") + f("memory_per_hour") + f("gpu_per_hour") - f("running_per_hour")).abs() < 1e-9
    );
    assert!(s.ok(&["estimate", "--cpu", "2"]).contains("running:"));

    // Usage: a date range in the breakdown and the CSV.
    let u = s.json(&["usage", "--from", "2026-01-01", "--project", "ml"]);
    assert_eq!(u["total"], "0.000000", "nothing ran: {u}");
    assert!(u["from"].as_str().unwrap().starts_with("2026-01-01T00:00:00"), "{u}");
    let csv = s.ok(&["usage", "--csv", "--from", "2026-01-01"]);
    assert!(
        csv.starts_with("id,project,sandbox,resource,seconds,period_from,period_to,amount,currency"),
        "{csv}"
    );
    let e = s.cli(&["usage", "--from", "yesterday"]);
    assert!(!e.status.success() && stderr(&e).contains("2026-11-01"), "{}", show(&e));
    s.stop();
}
