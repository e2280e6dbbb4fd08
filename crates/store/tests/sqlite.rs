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
use sandpit_store::{Role, SandboxFilter, SqliteStore, Store, StoreError};
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
