//! Accounts through the API: users, projects and members, API keys, the KYC gate and its signed
//! webhook, wallets, prices, metering, out of funds and the usage breakdown; and a walk over
//! every route of the OpenAPI document with another project's key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{KEY, TestServer};
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "whsec_test_0123456789abcdef";

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.kyc.webhook_secret = Some(sandpit_server::config::SecretString::new(SECRET));
        c.kyc.verification_url = Some("https://verify.example/start?ref={reference}".into());
        // The tests meter by hand; the loop still runs, rarely.
        c.billing.meter_interval_s = 10;
        // Dear disk, so that a second of a paused 256 MiB disk costs whole micro-units.
        c.billing.rates.paused_disk_per_gib_hour = "36".parse().unwrap();
    })
    .await
}

/// Creates a user (as the admin) and returns their key.
async fn user(s: &TestServer, name: &str) -> String {
    let (st, v) = s.call("POST", "/v1/users", Some(json!({"name": name}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!((v["user"]["kyc"].as_str(), v["user"]["role"].as_str()), (Some("unverified"), Some("member")));
    v["api_key"].as_str().unwrap().to_string()
}

async fn as_user(
    s: &TestServer,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    s.call_with_key(method, path, body, Some(key)).await
}

fn sign(secret: &str, ts: i64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.{body}").as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts a webhook body with the given timestamp and signature headers (None: left out).
async fn webhook(s: &TestServer, body: &str, ts: Option<i64>, sig: Option<String>) -> (StatusCode, Value) {
    let mut b = Request::post("/v1/kyc/webhook").header("content-type", "application/json");
    if let Some(ts) = ts {
        b = b.header("x-sandpit-timestamp", ts.to_string());
    }
    if let Some(sig) = sig {
        b = b.header("x-sandpit-signature", sig);
    }
    let resp = s.send(b.body(Body::from(body.to_string())).unwrap()).await;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn now_s() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Verifies `key`'s user through a signed webhook.
async fn verify(s: &TestServer, key: &str) {
    let (st, v) = as_user(s, key, "POST", "/v1/kyc", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let reference = v["reference"].as_str().unwrap();
    let body = json!({"event_id": format!("evt-{reference}"), "reference": reference, "status": "verified"})
        .to_string();
    let ts = now_s();
    let (st, v) = webhook(s, &body, Some(ts), Some(sign(SECRET, ts, &body))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

async fn credit(s: &TestServer, project: &str, amount: &str) -> Value {
    let (st, v) = s
        .call("POST", &format!("/v1/projects/{project}/wallet/credit"), Some(json!({"amount": amount})))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

fn micros(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not money: {v}"));
    s.parse::<sandpit_billing::Money>().unwrap().micros()
}

#[tokio::test]
async fn users_projects_members_and_keys() {
    let s = server().await;
    let bob = user(&s, "bob").await;
    let (st, me) = as_user(&s, &bob, "GET", "/v1/me", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!((me["user"]["name"].as_str(), me["projects"].as_array().unwrap().len()), (Some("bob"), 0));
    // Not a member of anything: sees no project, and cannot see the default one.
    assert_eq!(as_user(&s, &bob, "GET", "/v1/projects", None).await.1, json!([]));
    assert_eq!(as_user(&s, &bob, "GET", "/v1/projects/default", None).await.0, StatusCode::NOT_FOUND);
    // Only administrators manage users.
    let (st, e) = as_user(&s, &bob, "POST", "/v1/users", Some(json!({"name": "eve"}))).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    assert_eq!(s.call("POST", "/v1/users", Some(json!({"name": "bob"}))).await.0, StatusCode::CONFLICT);
    let (st, e) = s.call("POST", "/v1/users", Some(json!({"name": "Bad Name"}))).await;
    assert_eq!((st, e["field"].as_str()), (StatusCode::BAD_REQUEST, Some("name")));

    // Bob makes a project and owns it; alice joins it as a member.
    let (st, p) = as_user(&s, &bob, "POST", "/v1/projects", Some(json!({"name": "bobs"}))).await;
    assert_eq!((st, p["role"].as_str()), (StatusCode::CREATED, Some("owner")), "{p}");
    let alice = user(&s, "alice").await;
    let (st, _) =
        as_user(&s, &alice, "PUT", "/v1/projects/bobs/members/alice", Some(json!({"role": "owner"}))).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "not a member yet: the project does not exist for her");
    let (st, m) =
        as_user(&s, &bob, "PUT", "/v1/projects/bobs/members/alice", Some(json!({"role": "member"}))).await;
    assert_eq!((st, m["role"].as_str()), (StatusCode::OK, Some("member")), "{m}");
    let (st, _) =
        as_user(&s, &alice, "PUT", "/v1/projects/bobs/members/alice", Some(json!({"role": "owner"}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "a member cannot promote herself");
    let (_, members) = as_user(&s, &alice, "GET", "/v1/projects/bobs/members", None).await;
    assert_eq!(members, json!([{"user": "alice", "role": "member"}, {"user": "bob", "role": "owner"}]));
    // The last owner stays.
    let (st, e) = as_user(&s, &bob, "DELETE", "/v1/projects/bobs/members/bob", None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{e}");
    let (st, _) =
        as_user(&s, &bob, "PUT", "/v1/projects/bobs/members/bob", Some(json!({"role": "member"}))).await;
    assert_eq!(st, StatusCode::CONFLICT);
    // Alice may leave.
    assert_eq!(
        as_user(&s, &alice, "DELETE", "/v1/projects/bobs/members/alice", None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(as_user(&s, &alice, "GET", "/v1/projects", None).await.1, json!([]));

    // Keys: shown once, listed by prefix, restricted to a project, revoked.
    let (st, k) = as_user(&s, &bob, "POST", "/v1/keys", Some(json!({"name": "ci", "project": "bobs"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{k}");
    let ci = k["api_key"].as_str().unwrap().to_string();
    assert!(ci.starts_with(k["key"]["prefix"].as_str().unwrap()));
    let (_, keys) = as_user(&s, &bob, "GET", "/v1/keys", None).await;
    let listed = keys.to_string();
    assert!(!listed.contains(&ci) && !listed.contains(&bob), "a key appears in a list: {listed}");
    assert_eq!(keys.as_array().unwrap().len(), 2, "{keys}");
    // The restricted key sees its project only and cannot make unrestricted keys or projects.
    let (_, projects) = as_user(&s, &ci, "GET", "/v1/projects", None).await;
    assert_eq!(projects.as_array().unwrap().len(), 1);
    assert_eq!(
        as_user(&s, &ci, "POST", "/v1/keys", Some(json!({"name": "x"}))).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        as_user(&s, &ci, "POST", "/v1/projects", Some(json!({"name": "x"}))).await.0,
        StatusCode::FORBIDDEN
    );
    let (st, _) =
        as_user(&s, &alice, "POST", "/v1/keys", Some(json!({"name": "x", "project": "bobs"}))).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "alice left bobs");
    // Someone else's key is not found; the owner revokes it; it no longer works.
    let id = k["key"]["id"].as_i64().unwrap();
    assert_eq!(as_user(&s, &alice, "DELETE", &format!("/v1/keys/{id}"), None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(as_user(&s, &bob, "DELETE", &format!("/v1/keys/{id}"), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(as_user(&s, &ci, "GET", "/v1/me", None).await.0, StatusCode::UNAUTHORIZED);
    let (_, all) = s.call("GET", "/v1/keys?all=true", None).await;
    assert!(all.as_array().unwrap().iter().any(|k| k["id"] == id && k["revoked_at"].is_string()), "{all}");
    assert_eq!(as_user(&s, &bob, "GET", "/v1/keys?all=true", None).await.0, StatusCode::FORBIDDEN);
    // Keys are stored hashed: no key is in the database file.
    let db = std::fs::read(s.data_dir().join("sandpit.db")).unwrap();
    for k in [&bob, &alice, &ci] {
        assert!(!db.windows(k.len()).any(|w| w == k.as_bytes()), "a key is stored in plain text");
    }
}

#[tokio::test]
async fn creating_a_sandbox_needs_a_verified_user_and_money() {
    let s = server().await;
    let bob = user(&s, "bob").await;
    as_user(&s, &bob, "POST", "/v1/projects", Some(json!({"name": "bobs"}))).await;
    let (st, e) = as_user(&s, &bob, "POST", "/v1/sandboxes", Some(json!({}))).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("kyc_required")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("sandpit kyc start"), "{e}");

    // Verification starts: pending, with a reference and where to go.
    let (st, k) = as_user(&s, &bob, "POST", "/v1/kyc", None).await;
    assert_eq!((st, k["status"].as_str()), (StatusCode::OK, Some("pending")), "{k}");
    let reference = k["reference"].as_str().unwrap().to_string();
    assert_eq!(k["verification_url"], format!("https://verify.example/start?ref={reference}"));
    let (_, again) = as_user(&s, &bob, "POST", "/v1/kyc", None).await;
    assert_eq!(again["reference"], reference.as_str(), "starting again keeps the pending reference");
    let (st, e) = as_user(&s, &bob, "POST", "/v1/sandboxes", Some(json!({}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(e["message"].as_str().unwrap().contains("pending"), "{e}");

    let body = json!({"event_id": "evt-1", "reference": reference, "status": "verified"}).to_string();
    let ts = now_s();
    let (st, v) = webhook(&s, &body, Some(ts), Some(sign(SECRET, ts, &body))).await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("verified")), "{v}");
    assert_eq!(as_user(&s, &bob, "GET", "/v1/kyc", None).await.1["status"], "verified");

    // Verified, but the new project's wallet is empty.
    let (st, e) = as_user(&s, &bob, "POST", "/v1/sandboxes", Some(json!({}))).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::PAYMENT_REQUIRED, Some("insufficient_funds")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("bobs"), "{e}");
    credit(&s, "bobs", "5").await;
    let (st, v) =
        as_user(&s, &bob, "POST", "/v1/sandboxes?wait=true", Some(json!({"keep_running": true}))).await;
    assert_eq!(
        (st, v["state"].as_str(), v["project"].as_str()),
        (StatusCode::CREATED, Some("running"), Some("bobs"))
    );

    // An administrator can take verification back: resume is refused then.
    let id = v["id"].as_str().unwrap();
    assert_eq!(as_user(&s, &bob, "POST", &format!("/v1/sandboxes/{id}/pause"), None).await.0, StatusCode::OK);
    let (st, k) = s.call("PUT", "/v1/users/bob/kyc", Some(json!({"status": "rejected"}))).await;
    assert_eq!((st, k["status"].as_str()), (StatusCode::OK, Some("rejected")));
    let (st, e) = as_user(&s, &bob, "POST", &format!("/v1/sandboxes/{id}/resume"), None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("kyc_required")));
    let (st, e) = s.call("PUT", "/v1/users/bob/kyc", Some(json!({"status": "maybe"}))).await;
    assert_eq!((st, e["field"].as_str()), (StatusCode::BAD_REQUEST, Some("status")));
    assert_eq!(
        as_user(&s, &bob, "PUT", "/v1/users/bob/kyc", Some(json!({"status": "verified"}))).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.call("PUT", "/v1/users/nobody/kyc", Some(json!({"status": "verified"}))).await.0,
        StatusCode::NOT_FOUND
    );
}

async fn kyc_of(s: &TestServer, key: &str) -> Value {
    s.call_with_key("GET", "/v1/kyc", None, Some(key)).await.1["status"].clone()
}

#[tokio::test]
async fn the_kyc_webhook_accepts_only_fresh_signed_events_once() {
    let s = server().await;
    let bob = user(&s, "bob").await;
    let (_, k) = as_user(&s, &bob, "POST", "/v1/kyc", None).await;
    let reference = k["reference"].as_str().unwrap().to_string();
    let body = json!({"event_id": "evt-42", "reference": reference, "status": "verified"}).to_string();
    let ts = now_s();

    // Unsigned, signed with another secret, tampered, stale, from the future: all 401, no effect.
    let cases = [
        ("no headers", body.clone(), None, None),
        ("no signature", body.clone(), Some(ts), None),
        ("other secret", body.clone(), Some(ts), Some(sign("whsec_some_other_secret_value", ts, &body))),
        ("tampered body", body.replace("verified", "rejected"), Some(ts), Some(sign(SECRET, ts, &body))),
        ("tampered timestamp", body.clone(), Some(ts + 1), Some(sign(SECRET, ts, &body))),
        ("stale", body.clone(), Some(ts - 3600), Some(sign(SECRET, ts - 3600, &body))),
        ("future", body.clone(), Some(ts + 3600), Some(sign(SECRET, ts + 3600, &body))),
        ("not hex", body.clone(), Some(ts), Some("sha256=zz".into())),
    ];
    for (what, b, t, sig) in cases {
        let (st, e) = webhook(&s, &b, t, sig).await;
        assert_eq!(
            (st, e["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("bad_signature")),
            "{what}: {e}"
        );
        assert_eq!(kyc_of(&s, &bob).await, "pending", "{what} changed the status");
    }
    // Signed and fresh: applied. The same event again (a replay, even freshly signed): refused.
    let (st, _) = webhook(&s, &body, Some(ts), Some(sign(SECRET, ts, &body))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(kyc_of(&s, &bob).await, "verified");
    let ts2 = now_s();
    let (st, e) = webhook(&s, &body, Some(ts2), Some(sign(SECRET, ts2, &body))).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{e}");
    // A later event may not flip a settled verification; unknown references are 404.
    let flip = json!({"event_id": "evt-43", "reference": reference, "status": "rejected"}).to_string();
    let (st, _) = webhook(&s, &flip, Some(ts2), Some(sign(SECRET, ts2, &flip))).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(kyc_of(&s, &bob).await, "verified");
    let unknown = json!({"event_id": "evt-44", "reference": "kyc_nope", "status": "verified"}).to_string();
    assert_eq!(
        webhook(&s, &unknown, Some(ts2), Some(sign(SECRET, ts2, &unknown))).await.0,
        StatusCode::NOT_FOUND
    );
    let bad = json!({"event_id": "evt-45", "reference": reference, "status": "maybe"}).to_string();
    let (st, e) = webhook(&s, &bad, Some(ts2), Some(sign(SECRET, ts2, &bad))).await;
    assert_eq!((st, e["field"].as_str()), (StatusCode::BAD_REQUEST, Some("status")));

    // A server without a secret answers 503 to every webhook.
    let plain = TestServer::start().await;
    assert_eq!(
        webhook(&plain, &body, Some(ts), Some(sign(SECRET, ts, &body))).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn wallets_prices_and_credits() {
    let s = server().await;
    let (st, w) = s.call("GET", "/v1/projects/default/wallet", None).await;
    assert_eq!(st, StatusCode::OK, "{w}");
    assert_eq!(
        (w["currency"].as_str(), w["balance"].as_str()),
        (Some("USD"), Some("100.000000")),
        "bootstrap credit"
    );
    assert_eq!((w["balance_micros"].as_i64(), w["low"].as_bool()), (Some(100_000_000), Some(false)));
    let w = credit(&s, "default", "12.5").await;
    assert_eq!(w["balance"], "112.500000");
    for (amount, why) in [
        ("-1", "negative"),
        ("0", "zero"),
        ("1.1234567", "seven decimals"),
        ("1e3", "exponent"),
        ("", "empty"),
    ] {
        let (st, e) =
            s.call("POST", "/v1/projects/default/wallet/credit", Some(json!({"amount": amount}))).await;
        assert_eq!((st, e["field"].as_str()), (StatusCode::BAD_REQUEST, Some("amount")), "{why}: {e}");
    }
    let (st, _) = s.call("POST", "/v1/projects/nope/wallet/credit", Some(json!({"amount": "1"}))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, w) = s.call("GET", "/v1/projects/default/wallet", None).await;
    assert_eq!(w["balance"], "112.500000", "refused credits changed nothing");
    // The threshold: the wallet is low below it.
    let (st, w) = s.call("PATCH", "/v1/projects/default/wallet", Some(json!({"low_threshold": "200"}))).await;
    assert_eq!(
        (st, w["low"].as_bool(), w["low_threshold"].as_str()),
        (StatusCode::OK, Some(true), Some("200.000000"))
    );
    let (st, e) = s.call("PATCH", "/v1/projects/default/wallet", Some(json!({"low_threshold": "-1"}))).await;
    assert_eq!((st, e["field"].as_str()), (StatusCode::BAD_REQUEST, Some("low_threshold")));
    // A member who is not an owner can read the wallet but not change or credit it.
    let bob = user(&s, "bob").await;
    s.call("PUT", "/v1/projects/default/members/bob", Some(json!({"role": "member"}))).await;
    assert_eq!(as_user(&s, &bob, "GET", "/v1/projects/default/wallet", None).await.0, StatusCode::OK);
    let (st, _) =
        as_user(&s, &bob, "PATCH", "/v1/projects/default/wallet", Some(json!({"low_threshold": "1"}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) =
        as_user(&s, &bob, "POST", "/v1/projects/default/wallet/credit", Some(json!({"amount": "1000"})))
            .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // The ledger holds both credits, oldest first.
    let (_, ledger) = s.call("GET", "/v1/projects/default/wallet/ledger", None).await;
    let amounts: Vec<&str> =
        ledger.as_array().unwrap().iter().map(|l| l["amount"].as_str().unwrap()).collect();
    assert_eq!(amounts, ["100.000000", "12.500000"], "{ledger}");

    // Prices per hour at the default rates: 2 vCPU × 0.04 + 4 GiB × 0.005 + half an H100 × 3.00.
    let (st, e) = s
        .call(
            "POST",
            "/v1/estimate",
            Some(json!({"cpu": "2", "memory": "4Gi", "gpu": {"type": "H100", "fraction": 50}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{e}");
    assert_eq!(
        (e["cpu_per_hour"].as_str(), e["memory_per_hour"].as_str(), e["gpu_per_hour"].as_str()),
        (Some("0.080000"), Some("0.020000"), Some("1.500000"))
    );
    assert_eq!(e["running_per_hour"], "1.600000");
    // The paused price is for the disk kept: 256 MiB × 36 per GiB-hour (this test's rate).
    assert_eq!(e["paused_per_hour"], "9.000000");
    let (st, e) =
        s.call("POST", "/v1/estimate", Some(json!({"gpu": {"type": "H100", "fraction": 30}}))).await;
    assert_eq!((st, e["field"].as_str()), (StatusCode::BAD_REQUEST, Some("gpu.fraction")), "{e}");
}

/// The charges of a sandbox in the ledger, summed.
async fn charged(s: &TestServer, project: &str, id: &str) -> i64 {
    let (_, ledger) = s.call("GET", &format!("/v1/projects/{project}/wallet/ledger?limit=1000"), None).await;
    ledger
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "charge" && l["sandbox"] == id)
        .map(|l| micros(&l["amount"]))
        .sum()
}

#[tokio::test]
async fn running_and_paused_time_is_charged_and_an_empty_wallet_pauses_sandboxes() {
    let s = server().await;
    let v = s.create(json!({"keep_running": true, "cpu": "4", "memory": "1Gi"})).await;
    let id = v["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    sandpit_server::billing::meter_once(&s.app).await.unwrap();
    let (_, ledger) = s.call("GET", "/v1/projects/default/wallet/ledger?limit=1000", None).await;
    let lines: Vec<&Value> =
        ledger.as_array().unwrap().iter().filter(|l| l["sandbox"] == id.as_str()).collect();
    let resources: std::collections::BTreeSet<&str> =
        lines.iter().map(|l| l["resource"].as_str().unwrap()).collect();
    assert_eq!(resources, ["cpu", "memory"].into_iter().collect(), "{ledger}");
    let cpu_seconds: u64 =
        lines.iter().filter(|l| l["resource"] == "cpu").map(|l| l["seconds"].as_u64().unwrap()).sum();
    assert!((2..=4).contains(&cpu_seconds), "{cpu_seconds} s charged after ~2 s");
    let first = charged(&s, "default", &id).await;
    assert!(first > 0);
    let (_, w) = s.call("GET", "/v1/projects/default/wallet", None).await;
    assert_eq!(w["balance_micros"].as_i64().unwrap(), 100_000_000 - first, "{w}");
    assert_eq!(w["burn_per_hour"], "0.165000", "4 × 0.04 + 1 × 0.005 per hour: {w}");

    // Paused: only the disk is charged.
    s.call("POST", &format!("/v1/sandboxes/{id}/pause"), None).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sandpit_server::billing::meter_once(&s.app).await.unwrap();
    let (_, ledger) = s.call("GET", "/v1/projects/default/wallet/ledger?limit=1000", None).await;
    assert!(
        ledger.as_array().unwrap().iter().any(|l| l["sandbox"] == id.as_str() && l["resource"] == "storage"),
        "{ledger}"
    );

    // A project with almost nothing: its running sandbox is paused (out_of_funds), not destroyed,
    // and cannot be resumed until the wallet is credited.
    s.call("POST", "/v1/projects", Some(json!({"name": "poor"}))).await;
    credit(&s, "poor", "0.000050").await;
    let v = s.create(json!({"project": "poor", "keep_running": true, "cpu": "8", "memory": "1Gi"})).await;
    let poor = v["id"].as_str().unwrap().to_string();
    s.sh(&poor, "echo kept > /root/note").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = sandpit_server::billing::meter_once(&s.app).await.unwrap();
    assert_eq!(report.paused, 1, "{report:?}");
    let (_, v) = s.call("GET", &format!("/v1/sandboxes/{poor}"), None).await;
    assert_eq!(
        (v["state"].as_str(), v["state_reason"].as_str()),
        (Some("paused"), Some("out_of_funds")),
        "{v}"
    );
    let (_, w) = s.call("GET", "/v1/projects/poor/wallet", None).await;
    assert!(w["balance_micros"].as_i64().unwrap() <= 0, "{w}");
    let (st, e) = s.call("POST", &format!("/v1/sandboxes/{poor}/resume"), None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::PAYMENT_REQUIRED, Some("insufficient_funds")), "{e}");
    let (st, e) = s.call("POST", "/v1/sandboxes", Some(json!({"project": "poor"}))).await;
    assert_eq!(st, StatusCode::PAYMENT_REQUIRED, "{e}");
    credit(&s, "poor", "10").await;
    let (st, v) = s.call("POST", &format!("/v1/sandboxes/{poor}/resume"), None).await;
    assert_eq!((st, v["state"].as_str()), (StatusCode::OK, Some("running")), "{v}");
    assert_eq!(s.sh(&poor, "cat /root/note").await["stdout"], "kept\n", "the disk survived");
}

#[tokio::test]
async fn usage_breaks_down_by_resource_sandbox_project_and_day_and_exports_csv() {
    let s = server().await;
    s.call("POST", "/v1/projects", Some(json!({"name": "other"}))).await;
    credit(&s, "other", "10").await;
    let a = s.create(json!({"keep_running": true, "cpu": "2"})).await["id"].as_str().unwrap().to_string();
    let b =
        s.create(json!({"project": "other", "keep_running": true})).await["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.call("POST", &format!("/v1/sandboxes/{b}/pause"), None).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sandpit_server::billing::meter_once(&s.app).await.unwrap();
    let (st, u) = s.call("GET", "/v1/billing/usage", None).await;
    assert_eq!(st, StatusCode::OK, "{u}");
    let total = micros(&u["total"]);
    assert!(total > 0, "{u}");
    let sum = |v: &Value| -> i64 {
        match v {
            Value::Object(m) => m.values().map(micros).sum(),
            Value::Array(a) => a.iter().map(|x| micros(&x["amount"])).sum(),
            _ => panic!("{v}"),
        }
    };
    for group in ["by_resource", "by_sandbox", "by_project", "by_day"] {
        assert_eq!(sum(&u[group]), total, "{group} does not add up: {u}");
    }
    let sandboxes: Vec<&str> =
        u["by_sandbox"].as_array().unwrap().iter().map(|x| x["sandbox"].as_str().unwrap()).collect();
    assert!(sandboxes.contains(&a.as_str()) && sandboxes.contains(&b.as_str()), "{u}");
    assert_eq!(u["by_project"].as_object().unwrap().len(), 2);
    assert!(u["by_resource"]["storage"].is_string(), "the paused sandbox's disk: {u}");
    // One project.
    let (_, only) = s.call("GET", "/v1/billing/usage?project=other", None).await;
    assert_eq!(only["by_project"].as_object().unwrap().keys().collect::<Vec<_>>(), ["other"]);
    // CSV: one row per charge line, summing to the same total.
    let req = Request::get("/v1/billing/usage?format=csv")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::empty())
        .unwrap();
    let resp = s.send(req).await;
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let mut rows = text.lines();
    assert_eq!(
        rows.next(),
        Some("id,project,sandbox,resource,seconds,period_from,period_to,amount,currency")
    );
    let csv_total: i64 =
        rows.map(|r| r.split(',').nth(7).unwrap().parse::<sandpit_billing::Money>().unwrap().micros()).sum();
    assert_eq!(csv_total, total);
    // Bad ranges and formats name the parameter.
    for (q, field) in [
        ("from=yesterday", "from"),
        ("format=xml", "format"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
    ] {
        let (st, e) = s.call("GET", &format!("/v1/billing/usage?{q}"), None).await;
        assert_eq!((st, e["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{q}: {e}");
    }
}

/// Every route of the OpenAPI document, called with the key of a verified user of another
/// project with every path parameter naming the victim's things: nothing of the victim's is
/// reachable (404 or 403), and routes without parameters never show the victim's data.
#[tokio::test]
async fn another_projects_key_reaches_nothing_on_any_route() {
    let s = server().await;
    // The victim: the default project (admin) with a sandbox and a key.
    let victim = s.create(json!({"name": "secret-box", "keep_running": true})).await;
    let victim_id = victim["id"].as_str().unwrap().to_string();
    let (_, victim_key) =
        s.call("POST", "/v1/keys", Some(json!({"name": "victim-key", "project": "default"}))).await;
    let victim_key_id = victim_key["key"]["id"].as_i64().unwrap().to_string();
    // The attacker: verified, owner of their own funded project.
    let eve = user(&s, "eve").await;
    verify(&s, &eve).await;
    as_user(&s, &eve, "POST", "/v1/projects", Some(json!({"name": "eves"}))).await;
    credit(&s, "eves", "10").await;

    let doc: Value = serde_json::from_str(&sandpit_server::http::openapi_json()).unwrap();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if path == "/v1/kyc/webhook" || path == "/healthz" {
                continue; // not authenticated by keys
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let has_path_params = path.contains('{');
            let mut url = path.clone();
            url = url.replace("{id}", if path.starts_with("/v1/keys") { &victim_key_id } else { &victim_id });
            url = url.replace("{project}", "default").replace("{user}", "admin").replace("{pid}", "1");
            let query_project = params.iter().any(|p| p["in"] == "query" && p["name"] == "project");
            let mut query = Vec::new();
            for p in &params {
                if p["in"] == "query" && p["required"] == true {
                    query.push(format!("{}=x", p["name"].as_str().unwrap()));
                }
            }
            if query_project {
                query.push("project=default".into());
            }
            if path.contains("/files") {
                query.retain(|q| !q.starts_with("path="));
                query.push("path=/etc/hostname".into());
            }
            if !query.is_empty() {
                url = format!("{url}?{}", query.join("&"));
            }
            // A valid body, so that authorization (not validation) decides the answer.
            let body = match (method.as_str(), path.as_str()) {
                ("put", "/v1/projects/{project}/members/{user}") => Some(json!({"role": "member"})),
                ("put", "/v1/users/{user}/kyc") => Some(json!({"status": "verified"})),
                ("patch", "/v1/projects/{project}/wallet") => Some(json!({"low_threshold": "1"})),
                ("post", "/v1/projects/{project}/wallet/credit") => Some(json!({"amount": "1"})),
                ("post", "/v1/sandboxes/{id}/timeout") => Some(json!({"timeout_s": 60})),
                ("post", "/v1/sandboxes/{id}/exec") => Some(json!({"command": ["true"]})),
                ("post", "/v1/sandboxes/{id}/processes/{pid}/signal") => Some(json!({"signal": "TERM"})),
                ("post", "/v1/sandboxes/{id}/processes/{pid}/stdin") => Some(json!({"data": "x"})),
                ("post", "/v1/sandboxes/{id}/files/mkdir") => Some(json!({"path": "/tmp/x"})),
                ("post", "/v1/sandboxes/{id}/files/move") => Some(json!({"from": "/tmp/a", "to": "/tmp/b"})),
                ("post" | "put" | "patch", _) => Some(json!({})),
                _ => None,
            };
            let (st, v) = as_user(&s, &eve, &method.to_uppercase(), &url, body).await;
            checked += 1;
            let text = v.to_string();
            if has_path_params || query_project {
                assert!(
                    st == StatusCode::NOT_FOUND || st == StatusCode::FORBIDDEN,
                    "{method} {url} answered {st}: {text}"
                );
            } else {
                assert!(
                    !text.contains(&victim_id)
                        && !text.contains("secret-box")
                        && !text.contains("victim-key"),
                    "{method} {url} shows the victim's data: {text}"
                );
                assert!(!text.contains("\"default\""), "{method} {url} names the victim's project: {text}");
            }
        }
    }
    assert!(checked > 30, "only {checked} routes");
    // The victim's sandbox is untouched.
    let (_, v) = s.call("GET", &format!("/v1/sandboxes/{victim_id}"), None).await;
    assert_eq!(v["state"], "running");
}
