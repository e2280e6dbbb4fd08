//! The store suite against [`SqliteStore`] on a file in a temporary directory, plus what only
//! SQLite has: the file's mode and journal, listing speed on a large table, damaged rows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod suite;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use sandpit_store::{KycStatus, Role, SandboxFilter, SqliteStore, Store, StoreError};
use sandpit_types::{SandboxId, SandboxState};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

/// A database file of its own in a temporary directory.
struct SqliteHarness {
    dir: tempfile::TempDir,
}

impl SqliteHarness {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("sandpit.db")
    }
}

#[async_trait]
impl suite::Harness for SqliteHarness {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(&self.path()).await.unwrap())
    }
}

store_suite!(SqliteHarness::new());

/// A connection of the test's own to the database file, beside the store's.
async fn raw(path: &std::path::Path) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path)).await.unwrap()
}

#[tokio::test]
async fn database_file_is_private_and_in_wal_mode() {
    let h = SqliteHarness::new();
    let store = SqliteStore::open(&h.path()).await.unwrap();
    store.create_user("a", Role::Admin).await.unwrap();
    for file in ["sandpit.db", "sandpit.db-wal", "sandpit.db-shm"] {
        let mode = std::fs::metadata(h.dir.path().join(file)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}: {mode:o}");
    }
    let mut conn = raw(&h.path()).await;
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut conn).await.unwrap();
    assert_eq!(journal, "wal");
    store.close().await;
}

#[tokio::test]
async fn opening_in_a_missing_directory_fails_cleanly() {
    let h = SqliteHarness::new();
    let err = SqliteStore::open(&h.dir.path().join("nope/sandpit.db")).await.unwrap_err();
    assert!(matches!(err, StoreError::Database(sqlx::Error::Io(_))), "{err:?}");
}

#[tokio::test]
async fn in_memory_store_starts_empty_and_keeps_what_it_is_given() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    assert!(store.is_empty().await.unwrap());
    let p = store.create_project("p").await.unwrap();
    assert_eq!(store.project_by_name("p").await.unwrap(), Some(p));
}

#[tokio::test]
async fn damaged_json_is_reported_as_corrupt_not_a_panic() {
    let h = SqliteHarness::new();
    let store = SqliteStore::open(&h.path()).await.unwrap();
    let user = store.create_user("u", Role::Member).await.unwrap();
    let project = store.create_project("p").await.unwrap();
    let s = suite::sandbox(project.id, user.id);
    store.insert_sandbox(&s, sandpit_store::NewEvent::progress("x", None)).await.unwrap();
    let mut conn = raw(&h.path()).await;
    sqlx::query("UPDATE sandboxes SET env = 'not json' WHERE id = ?")
        .bind(s.id.as_str())
        .execute(&mut conn)
        .await
        .unwrap();
    let err = store.get_sandbox(&s.id).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { what: "env", .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_a_page_out_of_ten_thousand_sandboxes_is_fast() {
    const N: usize = 10_000;
    let h = SqliteHarness::new();
    let store = SqliteStore::open(&h.path()).await.unwrap();
    let user = store.create_user("u", Role::Member).await.unwrap();
    let mut projects = Vec::new();
    for i in 0..4 {
        projects.push(store.create_project(&format!("p{i}")).await.unwrap().id);
    }

    // (id, project, state, label) of every row, inserted in one transaction.
    type Row = (SandboxId, sandpit_store::ProjectId, SandboxState, String);
    let mut rows: Vec<Row> = Vec::with_capacity(N);
    let start = Instant::now();
    let mut conn = raw(&h.path()).await;
    let mut tx = conn.begin().await.unwrap();
    for i in 0..N {
        let id = SandboxId::generate();
        let project = projects[i % projects.len()];
        let state = SandboxState::ALL[i % SandboxState::ALL.len()];
        let label = format!("{}", i % 10);
        let metadata = serde_json::to_string(&BTreeMap::from([("shard", label.as_str())])).unwrap();
        sqlx::query(
            "INSERT INTO sandboxes (id, project_id, created_by, state, desired, image, cpu_millis, \
             memory_bytes, env, keep_running, timeout_s, metadata, created_at, generation) \
             VALUES (?, ?, ?, ?, 'running', 'base', 1000, 1073741824, '{}', 0, 3600, ?, 0, 1)",
        )
        .bind(id.as_str())
        .bind(project.0)
        .bind(user.id.0)
        .bind(state.as_str())
        .bind(metadata)
        .execute(&mut *tx)
        .await
        .unwrap();
        rows.push((id, project, state, label));
    }
    tx.commit().await.unwrap();
    println!("inserted {N} sandboxes in one transaction in {:?}", start.elapsed());

    let expect = |pred: &dyn Fn(&Row) -> bool| {
        let mut ids: Vec<SandboxId> = rows.iter().filter(|r| pred(r)).map(|r| r.0).collect();
        ids.sort_by(|a, b| b.cmp(a));
        ids
    };
    let cases: Vec<(&str, SandboxFilter, Vec<SandboxId>)> = vec![
        ("all projects", SandboxFilter::default(), expect(&|_| true)),
        (
            "one project",
            SandboxFilter { projects: Some(vec![projects[1]]), ..Default::default() },
            expect(&|r| r.1 == projects[1]),
        ),
        (
            "one project, running",
            SandboxFilter {
                projects: Some(vec![projects[1]]),
                states: vec![SandboxState::Running],
                ..Default::default()
            },
            expect(&|r| r.1 == projects[1] && r.2 == SandboxState::Running),
        ),
        (
            "two projects, two states",
            SandboxFilter {
                projects: Some(vec![projects[0], projects[2]]),
                states: vec![SandboxState::Running, SandboxState::Paused],
                ..Default::default()
            },
            expect(&|r| {
                (r.1 == projects[0] || r.1 == projects[2])
                    && matches!(r.2, SandboxState::Running | SandboxState::Paused)
            }),
        ),
        (
            "one project, label",
            SandboxFilter {
                projects: Some(vec![projects[3]]),
                metadata: vec![("shard".into(), "3".into())],
                ..Default::default()
            },
            expect(&|r| r.1 == projects[3] && r.3 == "3"),
        ),
        (
            "a label nothing has (reads every row)",
            SandboxFilter { metadata: vec![("shard".into(), "none".into())], ..Default::default() },
            Vec::new(),
        ),
    ];
    for (what, filter, expected) in cases {
        let start = Instant::now();
        let (page, next) = store.list_sandboxes(&filter, 100, None).await.unwrap();
        let first = start.elapsed();
        let got: Vec<SandboxId> = page.iter().map(|s| s.id).collect();
        assert_eq!(got, expected[..expected.len().min(100)], "{what}");
        assert_eq!(next.is_some(), expected.len() > 100, "{what}");

        if expected.len() < 200 {
            println!("list 100 of {} ({what}): {first:?}", expected.len());
            continue;
        }
        // A page from the middle, through the cursor.
        let middle = expected.len() / 2;
        let cursor = expected[middle - 1].to_string();
        let start = Instant::now();
        let (page, _) = store.list_sandboxes(&filter, 100, Some(&cursor)).await.unwrap();
        let deep = start.elapsed();
        let got: Vec<SandboxId> = page.iter().map(|s| s.id).collect();
        assert_eq!(got, expected[middle..(middle + 100).min(expected.len())], "{what}, middle page");
        println!("list 100 of {} ({what}): first page {first:?}, middle page {deep:?}", expected.len());
    }
    let start = Instant::now();
    let counts = store.count_by_state().await.unwrap();
    println!("count_by_state over {N}: {:?}", start.elapsed());
    assert!(counts.iter().all(|(_, n)| *n == (N / 5) as u64));
}

/// A database as the release before accounts left it (only `0001` applied, through sqlx's
/// migrator as `SqliteStore::open` ran it then) upgrades to the current schema when opened, and
/// what it held is still there.
#[tokio::test]
async fn a_database_from_before_accounts_upgrades_in_place() {
    let h = SqliteHarness::new();
    let sandbox_id = SandboxId::generate();
    {
        let options =
            SqliteConnectOptions::new().filename(h.path()).create_if_missing(true).foreign_keys(true);
        let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::migrate!("./migrations/sqlite").run_to(1, &mut conn).await.unwrap();
        for sql in [
            "INSERT INTO users (id, name, role, created_at) VALUES (1, 'admin', 'admin', 1700000000000)",
            "INSERT INTO users (id, name, role, created_at) VALUES (2, 'bob', 'member', 1700000000001)",
            "INSERT INTO projects (id, name, created_at) VALUES (1, 'default', 1700000000000)",
        ] {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        sqlx::query(
            "INSERT INTO sandboxes (id, project_id, created_by, state, desired, image, cpu_millis, \
             memory_bytes, env, keep_running, timeout_s, metadata, created_at, started_at, generation) \
             VALUES (?, 1, 2, 'running', 'running', 'base', 1000, 1073741824, '{}', 0, 3600, '{}', \
             1700000000000, 1700000000500, 3)",
        )
        .bind(sandbox_id.as_str())
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }

    let store = SqliteStore::open(&h.path()).await.unwrap();
    let admin = store.get_user(sandpit_store::UserId(1)).await.unwrap().unwrap();
    assert_eq!((admin.name.as_str(), admin.role), ("admin", Role::Admin));
    assert_eq!(
        (admin.kyc, admin.kyc_reference),
        (KycStatus::Unverified, None),
        "existing users start unverified"
    );
    let bob = store.get_user(sandpit_store::UserId(2)).await.unwrap().unwrap();
    assert_eq!(bob.kyc, KycStatus::Unverified);
    let s = store.get_sandbox(&sandbox_id).await.unwrap().unwrap();
    assert_eq!((s.state, s.generation), (SandboxState::Running, 3));

    // The new tables work on the old rows.
    let verified = store.set_kyc(admin.id, KycStatus::Verified, None).await.unwrap();
    assert_eq!(verified.kyc, KycStatus::Verified);
    let project = store.project_by_name("default").await.unwrap().unwrap();
    store.add_member(project.id, bob.id, sandpit_store::MemberRole::Owner).await.unwrap();
    assert_eq!(store.wallet(project.id).await.unwrap().balance, 0);
    let metered = store.sandboxes_to_meter().await.unwrap();
    assert_eq!(metered.len(), 1);
    assert_eq!((metered[0].sandbox.id, metered[0].charged_until), (sandbox_id, None));
    let until = s.started_at.unwrap() + time::Duration::seconds(10);
    store.charge(&sandbox_id, None, until, &[]).await.unwrap();
    store.close().await;

    // Every migration is recorded, and the new constraints hold on the upgraded file.
    let mut conn = raw(&h.path()).await;
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(versions, [1, 2, 3, 4]);
    let err =
        sqlx::query("UPDATE users SET kyc = 'maybe' WHERE id = 2").execute(&mut conn).await.unwrap_err();
    assert!(err.to_string().contains("CHECK"), "{err}");
    sqlx::query("UPDATE users SET kyc_reference = 'r' WHERE id = 1").execute(&mut conn).await.unwrap();
    let err = sqlx::query("UPDATE users SET kyc_reference = 'r' WHERE id = 2")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UNIQUE"), "{err}");
    drop(conn);
    // Opening again runs nothing twice.
    SqliteStore::open(&h.path()).await.unwrap().close().await;
}

/// The ledger refuses lines that are not what their kind says, even written past the store.
#[tokio::test]
async fn ledger_lines_must_match_their_kind() {
    let h = SqliteHarness::new();
    let store = SqliteStore::open(&h.path()).await.unwrap();
    let project = store.create_project("p").await.unwrap();
    let mut conn = raw(&h.path()).await;
    let insert = |sql: &'static str| sqlx::query(sql).bind(project.id.0);
    for sql in [
        // A credit naming a sandbox.
        "INSERT INTO ledger (project_id, at, kind, amount, sandbox_id) VALUES (?, 0, 'credit', 5, 'x')",
        // A charge with no period.
        "INSERT INTO ledger (project_id, at, kind, amount, sandbox_id, resource, seconds) \
         VALUES (?, 0, 'charge', 5, 'x', 'cpu', 1)",
        // A period that ends before it starts.
        "INSERT INTO ledger (project_id, at, kind, amount, sandbox_id, resource, seconds, period_from, period_to) \
         VALUES (?, 0, 'charge', 5, 'x', 'cpu', 1, 10, 9)",
        // A zero amount.
        "INSERT INTO ledger (project_id, at, kind, amount) VALUES (?, 0, 'credit', 0)",
        // A float.
        "INSERT INTO ledger (project_id, at, kind, amount) VALUES (?, 0, 'credit', 1.5)",
    ] {
        assert!(insert(sql).execute(&mut conn).await.is_err(), "{sql}");
    }
    insert("INSERT INTO ledger (project_id, at, kind, amount) VALUES (?, 0, 'credit', 5)")
        .execute(&mut conn)
        .await
        .unwrap();
}
