//! The store test suite: every behaviour the server relies on, written against `dyn Store` so
//! that each implementation (SQLite now, PostgreSQL later) runs the same tests.
//!
//! An implementation's test file provides a [`Harness`] (a database of its own per test, which it
//! can open again) and expands [`store_suite!`] with it:
//!
//! ```ignore
//! #[macro_use]
//! mod suite;
//! store_suite!(MyHarness::new());
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use sandpit_store::{Desired, ProjectId, UserId};
use sandpit_store::{
    NewApiKey, NewEvent, Project, Role, SandboxFilter, SandboxRecord, Store, StoreError, User,
    truncate_to_millis,
};
use sandpit_types::api::{EventKind, GpuRequest};
use sandpit_types::{ByteSize, MilliCpu, SandboxId, SandboxState};
use time::{Duration, OffsetDateTime};

/// A database for one test.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Opens the test's database: the same one every call (a second call after dropping the first
    /// store is a restart of the server).
    async fn open(&self) -> Arc<dyn Store>;
}

/// Expands to one `#[test]` per suite function, each with a fresh harness from `$harness`.
macro_rules! store_suite {
    ($harness:expr) => {
        store_suite!(@async $harness;
            new_store_is_empty,
            users_have_unique_names,
            projects_have_unique_names_and_list_by_name,
            api_keys_are_found_by_hash_until_revoked,
            api_keys_refuse_unknown_owners_and_duplicate_hashes,
            sandbox_round_trips_every_field,
            sandbox_round_trips_with_every_optional_field_empty,
            timestamps_are_truncated_to_milliseconds,
            insert_refuses_unknown_project_or_user_and_duplicate_id,
            sandbox_name_is_taken_only_while_a_sandbox_of_that_name_lives,
            renaming_onto_a_live_name_conflicts,
            updates_bump_the_generation_and_return_the_stored_record,
            two_updates_from_one_generation_let_exactly_one_win,
            concurrent_updates_from_one_generation_let_exactly_one_win,
            updating_an_unknown_sandbox_is_not_found,
            events_are_numbered_per_sandbox_and_listed_after_a_seq,
            appending_to_an_unknown_sandbox_is_not_found,
            listing_filters_by_project_state_and_metadata,
            listing_pages_cover_every_match_once_newest_first,
            listing_clamps_the_page_size,
            due_timeouts_and_next_deadline_see_only_running_sandboxes,
            due_retention_sees_only_paused_sandboxes_paused_long_enough,
            count_by_state_counts_every_state,
            sandboxes_in_states_returns_every_match,
            many_concurrent_writers_never_fail,
            concurrent_appends_to_one_sandbox_get_distinct_consecutive_seqs,
            reopening_the_store_keeps_everything,
        );
        store_suite!(@sync $harness; pagination_never_skips_or_repeats_a_sandbox);
    };
    (@async $harness:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let harness = $harness;
                suite::$name(&harness).await;
            }
        )*
    };
    (@sync $harness:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let harness = $harness;
                suite::$name(&harness);
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A name no other call returns.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", UNIQUE.fetch_add(1, Ordering::Relaxed))
}

fn now() -> OffsetDateTime {
    truncate_to_millis(OffsetDateTime::now_utc())
}

/// A user and a project.
async fn owner(store: &dyn Store) -> (User, Project) {
    let user = store.create_user(&unique("user"), Role::Member).await.unwrap();
    let project = store.create_project(&unique("project")).await.unwrap();
    (user, project)
}

/// A provisioning sandbox with no optional field set.
pub fn sandbox(project: ProjectId, user: UserId) -> SandboxRecord {
    SandboxRecord {
        id: SandboxId::generate(),
        project,
        created_by: user,
        name: None,
        state: SandboxState::Provisioning,
        state_reason: None,
        desired: Desired::Running,
        image: "base".into(),
        cpu: MilliCpu(1000),
        memory: ByteSize::gib(1),
        gpu: None,
        env: BTreeMap::new(),
        command: None,
        keep_running: false,
        timeout_s: 3600,
        metadata: BTreeMap::new(),
        created_at: now(),
        started_at: None,
        ends_at: None,
        remaining_ms: None,
        paused_at: None,
        terminated_at: None,
        exit_code: None,
        credentials: None,
        generation: 1,
    }
}

fn created() -> NewEvent {
    NewEvent::state(SandboxState::Provisioning, Some("created".into()))
}

/// Inserts `s` and returns it as stored.
async fn insert(store: &dyn Store, s: SandboxRecord) -> SandboxRecord {
    store.insert_sandbox(&s, created()).await.unwrap();
    store.get_sandbox(&s.id).await.unwrap().unwrap()
}

/// Moves `s` to `state`, setting what `f` sets, and returns it as stored.
async fn set(store: &dyn Store, s: &SandboxRecord, f: impl FnOnce(&mut SandboxRecord)) -> SandboxRecord {
    let mut next = s.clone();
    f(&mut next);
    let event = NewEvent::state(next.state, None);
    store.update_sandbox(&next, Some(event)).await.unwrap().0
}

/// Every page of a listing, following cursors.
async fn all_pages(store: &dyn Store, filter: &SandboxFilter, limit: u32) -> Vec<Vec<SandboxId>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (page, next) = store.list_sandboxes(filter, limit, cursor.as_deref()).await.unwrap();
        pages.push(page.iter().map(|s| s.id).collect());
        match next {
            Some(c) => cursor = Some(c),
            None => return pages,
        }
        assert!(pages.len() < 10_000, "pagination does not end");
    }
}

fn newest_first(mut ids: Vec<SandboxId>) -> Vec<SandboxId> {
    ids.sort_by(|a, b| b.cmp(a));
    ids
}

fn projects(ids: &[ProjectId]) -> SandboxFilter {
    SandboxFilter { projects: Some(ids.to_vec()), ..Default::default() }
}

// ---------------------------------------------------------------------------------------------
// Users, projects, keys.

pub async fn new_store_is_empty(h: &dyn Harness) {
    let store = h.open().await;
    assert!(store.is_empty().await.unwrap());
    assert!(store.list_projects().await.unwrap().is_empty());
    assert_eq!(store.get_user(UserId(1)).await.unwrap(), None);
    assert_eq!(store.get_project(ProjectId(1)).await.unwrap(), None);
    assert_eq!(store.project_by_name("default").await.unwrap(), None);
    assert_eq!(store.find_api_key(&[0; 32]).await.unwrap(), None);
    assert_eq!(store.list_sandboxes(&SandboxFilter::default(), 100, None).await.unwrap(), (vec![], None));
    assert_eq!(store.next_deadline().await.unwrap(), None);
    let counts = store.count_by_state().await.unwrap();
    assert_eq!(counts, SandboxState::ALL.into_iter().map(|s| (s, 0)).collect::<Vec<_>>());
}

pub async fn users_have_unique_names(h: &dyn Harness) {
    let store = h.open().await;
    let admin = store.create_user("admin", Role::Admin).await.unwrap();
    assert!(!store.is_empty().await.unwrap());
    assert_eq!(admin.name, "admin");
    assert_eq!(admin.role, Role::Admin);
    assert_eq!(store.get_user(admin.id).await.unwrap(), Some(admin.clone()));
    let err = store.create_user("admin", Role::Member).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { field: "user", ref value } if value == "admin"), "{err:?}");
    let other = store.create_user("other", Role::Member).await.unwrap();
    assert_ne!(other.id, admin.id);
    assert_eq!(store.get_user(other.id).await.unwrap().unwrap().role, Role::Member);
}

pub async fn projects_have_unique_names_and_list_by_name(h: &dyn Harness) {
    let store = h.open().await;
    let b = store.create_project("beta").await.unwrap();
    let a = store.create_project("alpha").await.unwrap();
    let err = store.create_project("beta").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { field: "project", ref value } if value == "beta"),
        "{err:?}"
    );
    assert_eq!(store.list_projects().await.unwrap(), vec![a.clone(), b.clone()]);
    assert_eq!(store.project_by_name("alpha").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_project(b.id).await.unwrap(), Some(b));
    assert_eq!(store.project_by_name("gamma").await.unwrap(), None);
}

pub async fn api_keys_are_found_by_hash_until_revoked(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let key = store
        .create_api_key(NewApiKey {
            user: user.id,
            project: Some(project.id),
            name: "ci".into(),
            hash: [7; 32],
            prefix: "sp_abcd".into(),
        })
        .await
        .unwrap();
    assert_eq!((key.user, key.project, key.revoked_at), (user.id, Some(project.id), None));
    let (found, found_user) = store.find_api_key(&[7; 32]).await.unwrap().unwrap();
    assert_eq!(found, key);
    assert_eq!(found_user, user);
    assert_eq!(store.find_api_key(&[8; 32]).await.unwrap(), None);

    let unscoped = store
        .create_api_key(NewApiKey {
            user: user.id,
            project: None,
            name: "all".into(),
            hash: [9; 32],
            prefix: "sp_x".into(),
        })
        .await
        .unwrap();
    assert_eq!(store.find_api_key(&[9; 32]).await.unwrap().unwrap().0.project, None);

    store.revoke_api_key(key.id).await.unwrap();
    assert_eq!(store.find_api_key(&[7; 32]).await.unwrap(), None, "a revoked key must not authenticate");
    store.revoke_api_key(key.id).await.unwrap();
    assert!(store.find_api_key(&[9; 32]).await.unwrap().is_some(), "revoking one key leaves the others");
    let err = store.revoke_api_key(sandpit_store::ApiKeyId(unscoped.id.0 + 1000)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "api key" }), "{err:?}");
}

pub async fn api_keys_refuse_unknown_owners_and_duplicate_hashes(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let new =
        |user, project| NewApiKey { user, project, name: "k".into(), hash: [1; 32], prefix: "sp_1".into() };
    let err = store.create_api_key(new(UserId(user.id.0 + 1000), None)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "user" }), "{err:?}");
    let err = store.create_api_key(new(user.id, Some(ProjectId(project.id.0 + 1000)))).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "project" }), "{err:?}");
    store.create_api_key(new(user.id, None)).await.unwrap();
    let err = store.create_api_key(new(user.id, Some(project.id))).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { field: "key", .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Sandboxes.

pub async fn sandbox_round_trips_every_field(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let t = now();
    let s = SandboxRecord {
        id: SandboxId::generate(),
        project: project.id,
        created_by: user.id,
        name: Some("web-1".into()),
        state: SandboxState::Paused,
        state_reason: Some("out_of_funds".into()),
        desired: Desired::Paused,
        image: "docker.io/library/python:3.12".into(),
        cpu: MilliCpu(2500),
        memory: ByteSize(u64::try_from(i64::MAX).unwrap()),
        gpu: Some(GpuRequest { gpu_type: "H100".into(), count: 2, fraction: 50 }),
        env: BTreeMap::from([("A".into(), "1".into()), ("UNICODE".into(), "héllo \"wörld\"\n".into())]),
        command: Some(vec!["python3".into(), "-c".into(), "print('x')".into(), String::new()]),
        keep_running: true,
        timeout_s: 7 * 24 * 3600,
        metadata: BTreeMap::from([("team".into(), "ml".into()), ("we\"ird.key".into(), "v".into())]),
        created_at: t - Duration::hours(2),
        started_at: Some(t - Duration::hours(1)),
        ends_at: Some(t + Duration::minutes(30)),
        remaining_ms: Some(1_234_567),
        paused_at: Some(t - Duration::seconds(5)),
        terminated_at: Some(t + Duration::days(1)),
        exit_code: Some(-9),
        credentials: Some(vec![0, 1, 2, 254, 255]),
        generation: 1,
    };
    let event = store.insert_sandbox(&s, created()).await.unwrap();
    assert_eq!(event.seq, 1);
    assert_eq!(event.kind, EventKind::State);
    assert_eq!(store.get_sandbox(&s.id).await.unwrap(), Some(s.clone()));
    let (page, _) = store.list_sandboxes(&projects(&[project.id]), 10, None).await.unwrap();
    assert_eq!(page, vec![s]);
}

pub async fn sandbox_round_trips_with_every_optional_field_empty(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let mut s = sandbox(project.id, user.id);
    s.generation = 42;
    store.insert_sandbox(&s, created()).await.unwrap();
    s.generation = 1;
    assert_eq!(store.get_sandbox(&s.id).await.unwrap(), Some(s), "an insert starts at generation 1");
    assert_eq!(store.get_sandbox(&SandboxId::generate()).await.unwrap(), None);
}

pub async fn timestamps_are_truncated_to_milliseconds(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let precise = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789)
        .unwrap()
        .to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap());
    let mut s = sandbox(project.id, user.id);
    s.created_at = precise;
    s.ends_at = Some(precise);
    store.insert_sandbox(&s, created()).await.unwrap();
    let stored = store.get_sandbox(&s.id).await.unwrap().unwrap();
    assert_eq!(stored.created_at, truncate_to_millis(precise));
    assert_eq!(stored.created_at.offset(), time::UtcOffset::UTC);
    assert_eq!(stored.created_at.nanosecond(), 123_000_000);
    assert_eq!(stored.ends_at, Some(truncate_to_millis(precise)));
}

pub async fn insert_refuses_unknown_project_or_user_and_duplicate_id(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let err =
        store.insert_sandbox(&sandbox(ProjectId(project.id.0 + 1000), user.id), created()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "project" }), "{err:?}");
    let err =
        store.insert_sandbox(&sandbox(project.id, UserId(user.id.0 + 1000)), created()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "user" }), "{err:?}");
    let s = sandbox(project.id, user.id);
    store.insert_sandbox(&s, created()).await.unwrap();
    let err = store.insert_sandbox(&s, created()).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { field: "id", .. }), "{err:?}");
    assert_eq!(store.list_events(&s.id, 0, 100).await.unwrap().len(), 1, "a refused insert writes no event");
}

pub async fn sandbox_name_is_taken_only_while_a_sandbox_of_that_name_lives(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let other_project = store.create_project(&unique("other")).await.unwrap();
    let named = |p: ProjectId| SandboxRecord { name: Some("web".into()), ..sandbox(p, user.id) };

    let first = insert(&*store, named(project.id)).await;
    let running = set(&*store, &first, |s| s.state = SandboxState::Running).await;
    let dup = named(project.id);
    let err = store.insert_sandbox(&dup, created()).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { field: "name", ref value } if value == "web"), "{err:?}");
    assert_eq!(store.get_sandbox(&dup.id).await.unwrap(), None, "a refused insert leaves nothing");

    insert(&*store, named(other_project.id)).await;
    insert(&*store, sandbox(project.id, user.id)).await;
    insert(&*store, sandbox(project.id, user.id)).await;

    set(&*store, &running, |s| s.state = SandboxState::Terminated).await;
    let second = insert(&*store, named(project.id)).await;
    set(&*store, &second, |s| s.state = SandboxState::Failed).await;
    insert(&*store, named(project.id)).await;
}

pub async fn renaming_onto_a_live_name_conflicts(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    insert(&*store, SandboxRecord { name: Some("a".into()), ..sandbox(project.id, user.id) }).await;
    let b = insert(&*store, SandboxRecord { name: Some("b".into()), ..sandbox(project.id, user.id) }).await;
    let renamed = SandboxRecord { name: Some("a".into()), ..b.clone() };
    let err = store.update_sandbox(&renamed, Some(created())).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { field: "name", .. }), "{err:?}");
    assert_eq!(store.get_sandbox(&b.id).await.unwrap(), Some(b.clone()), "a refused update changes nothing");
    assert_eq!(store.list_events(&b.id, 0, 100).await.unwrap().len(), 1);
}

pub async fn updates_bump_the_generation_and_return_the_stored_record(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let s = insert(&*store, sandbox(project.id, user.id)).await;
    let t = now();
    let mut next = s.clone();
    next.state = SandboxState::Running;
    next.started_at = Some(t);
    next.ends_at = Some(t + Duration::hours(1));
    let (stored, event) = store.update_sandbox(&next, None).await.unwrap();
    assert_eq!(event, None);
    assert_eq!(stored, SandboxRecord { generation: 2, ..next.clone() });
    assert_eq!(store.get_sandbox(&s.id).await.unwrap(), Some(stored.clone()));
    let (again, event) =
        store.update_sandbox(&stored, Some(NewEvent::state(SandboxState::Running, None))).await.unwrap();
    assert_eq!(again.generation, 3);
    assert_eq!(event.unwrap().seq, 2);
}

pub async fn two_updates_from_one_generation_let_exactly_one_win(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let s = insert(&*store, sandbox(project.id, user.id)).await;
    let a = SandboxRecord { state: SandboxState::Running, ..s.clone() };
    let b = SandboxRecord { state: SandboxState::Terminated, ..s.clone() };
    store.update_sandbox(&a, Some(NewEvent::state(SandboxState::Running, None))).await.unwrap();
    let err =
        store.update_sandbox(&b, Some(NewEvent::state(SandboxState::Terminated, None))).await.unwrap_err();
    assert!(matches!(err, StoreError::Stale(id) if id == s.id), "{err:?}");
    let stored = store.get_sandbox(&s.id).await.unwrap().unwrap();
    assert_eq!((stored.state, stored.generation), (SandboxState::Running, 2));
    let events = store.list_events(&s.id, 0, 100).await.unwrap();
    assert_eq!(events.len(), 2, "the losing update appends no event");
}

pub async fn concurrent_updates_from_one_generation_let_exactly_one_win(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let s = insert(&*store, sandbox(project.id, user.id)).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let next = SandboxRecord { state_reason: Some(format!("writer {i}")), ..s.clone() };
            tokio::spawn(
                async move { store.update_sandbox(&next, Some(NewEvent::progress("x", None))).await },
            )
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok((stored, _)) => {
                won += 1;
                assert_eq!(stored.generation, 2);
            }
            Err(StoreError::Stale(id)) => assert_eq!(id, s.id),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.list_events(&s.id, 0, 100).await.unwrap().len(), 2);
}

pub async fn updating_an_unknown_sandbox_is_not_found(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let err = store.update_sandbox(&sandbox(project.id, user.id), None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "sandbox" }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Events.

pub async fn events_are_numbered_per_sandbox_and_listed_after_a_seq(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let a = insert(&*store, sandbox(project.id, user.id)).await;
    let b = insert(&*store, sandbox(project.id, user.id)).await;
    let progress = serde_json::json!({"layer": "sha256:abc", "done": 10, "total": 100});
    let e2 = store.append_event(&a.id, NewEvent::progress("pulling", Some(progress.clone()))).await.unwrap();
    let e3 = store.append_event(&a.id, NewEvent::progress("unpacking", None)).await.unwrap();
    let (_, e4) = store
        .update_sandbox(
            &SandboxRecord { state: SandboxState::Failed, ..a.clone() },
            Some(NewEvent::state(SandboxState::Failed, Some("image not found".into()))),
        )
        .await
        .unwrap();
    let b2 = store.append_event(&b.id, NewEvent::progress("pulling", None)).await.unwrap();
    assert_eq!((e2.seq, e3.seq, e4.as_ref().unwrap().seq, b2.seq), (2, 3, 4, 2));

    let all = store.list_events(&a.id, 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(all[0].state, Some(SandboxState::Provisioning));
    assert_eq!(all[0].reason.as_deref(), Some("created"));
    assert_eq!(all[1], e2);
    assert_eq!(all[1].progress, Some(progress));
    assert_eq!(all[1].kind, EventKind::Progress);
    assert_eq!(all[3], e4.unwrap());
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at));

    let after = store.list_events(&a.id, 2, 100).await.unwrap();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
    let limited = store.list_events(&a.id, 0, 2).await.unwrap();
    assert_eq!(limited.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert!(store.list_events(&a.id, 4, 100).await.unwrap().is_empty());
    assert!(store.list_events(&a.id, u64::MAX, 100).await.unwrap().is_empty());
    assert!(store.list_events(&SandboxId::generate(), 0, 100).await.unwrap().is_empty());
}

pub async fn appending_to_an_unknown_sandbox_is_not_found(h: &dyn Harness) {
    let store = h.open().await;
    let err = store.append_event(&SandboxId::generate(), NewEvent::progress("x", None)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "sandbox" }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Listing.

pub async fn listing_filters_by_project_state_and_metadata(h: &dyn Harness) {
    let store = h.open().await;
    let (user, p1) = owner(&*store).await;
    let p2 = store.create_project(&unique("p2")).await.unwrap();
    let p3 = store.create_project(&unique("p3")).await.unwrap();
    let label = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut all = Vec::new();
    for (p, state, metadata) in [
        (p1.id, SandboxState::Provisioning, label(&[("team", "ml")])),
        (p1.id, SandboxState::Running, label(&[("team", "ml"), ("env", "prod")])),
        (p1.id, SandboxState::Terminated, label(&[("team", "web")])),
        (p2.id, SandboxState::Running, label(&[("team", "ml"), ("q\"uo.te", "x'y")])),
        (p2.id, SandboxState::Paused, BTreeMap::new()),
    ] {
        let s = insert(&*store, SandboxRecord { metadata, ..sandbox(p, user.id) }).await;
        all.push(set(&*store, &s, |s| s.state = state).await);
    }
    let ids = |pred: &dyn Fn(&SandboxRecord) -> bool| {
        newest_first(all.iter().filter(|s| pred(s)).map(|s| s.id).collect())
    };
    let list = |filter: SandboxFilter| {
        let store = store.clone();
        async move {
            let (page, next) = store.list_sandboxes(&filter, 100, None).await.unwrap();
            assert_eq!(next, None);
            page.iter().map(|s| s.id).collect::<Vec<_>>()
        }
    };
    let both = vec![p1.id, p2.id];

    assert_eq!(list(projects(&both)).await, ids(&|_| true));
    assert_eq!(list(projects(&[p1.id])).await, ids(&|s| s.project == p1.id));
    assert_eq!(list(projects(&[p3.id])).await, Vec::<SandboxId>::new());
    assert_eq!(list(projects(&[])).await, Vec::<SandboxId>::new(), "no project matches nothing");
    let running = SandboxFilter { states: vec![SandboxState::Running], ..projects(&both) };
    assert_eq!(list(running).await, ids(&|s| s.state == SandboxState::Running));
    let live = SandboxFilter { states: vec![SandboxState::Running, SandboxState::Paused], ..projects(&both) };
    assert_eq!(list(live).await, ids(&|s| matches!(s.state, SandboxState::Running | SandboxState::Paused)));
    let ml = SandboxFilter { metadata: vec![("team".into(), "ml".into())], ..projects(&both) };
    assert_eq!(list(ml).await, ids(&|s| s.metadata.get("team").map(String::as_str) == Some("ml")));
    let ml_prod = SandboxFilter {
        metadata: vec![("team".into(), "ml".into()), ("env".into(), "prod".into())],
        ..projects(&both)
    };
    assert_eq!(list(ml_prod).await, vec![all[1].id], "every label must match");
    let quoted = SandboxFilter { metadata: vec![("q\"uo.te".into(), "x'y".into())], ..projects(&both) };
    assert_eq!(list(quoted).await, vec![all[3].id]);
    let key_as_value = SandboxFilter { metadata: vec![("ml".into(), "team".into())], ..projects(&both) };
    assert_eq!(list(key_as_value).await, Vec::<SandboxId>::new());
    let injection =
        SandboxFilter { metadata: vec![("team') OR 1=1 --".into(), "ml".into())], ..projects(&both) };
    assert_eq!(list(injection).await, Vec::<SandboxId>::new());
    let combined = SandboxFilter {
        projects: Some(vec![p1.id]),
        states: vec![SandboxState::Running, SandboxState::Provisioning],
        metadata: vec![("team".into(), "ml".into())],
    };
    assert_eq!(list(combined).await, newest_first(vec![all[0].id, all[1].id]));
}

pub async fn listing_pages_cover_every_match_once_newest_first(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let mut ids = Vec::new();
    for _ in 0..23 {
        ids.push(insert(&*store, sandbox(project.id, user.id)).await.id);
    }
    let expected = newest_first(ids);
    for limit in [1, 5, 22, 23, 24, 100] {
        let pages = all_pages(&*store, &projects(&[project.id]), limit).await;
        assert!(pages.iter().all(|p| p.len() <= limit as usize && !p.is_empty()), "limit {limit}: {pages:?}");
        assert_eq!(pages.len(), expected.len().div_ceil(limit as usize), "limit {limit}");
        assert_eq!(pages.concat(), expected, "limit {limit}");
    }
}

pub async fn listing_clamps_the_page_size(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    for _ in 0..3 {
        insert(&*store, sandbox(project.id, user.id)).await;
    }
    let (page, next) = store.list_sandboxes(&projects(&[project.id]), 0, None).await.unwrap();
    assert_eq!(page.len(), 1, "limit 0 means 1");
    assert!(next.is_some());
    let (page, next) = store.list_sandboxes(&projects(&[project.id]), u32::MAX, None).await.unwrap();
    assert_eq!((page.len(), next), (3, None));
}

// ---------------------------------------------------------------------------------------------
// Reconciler queries.

pub async fn due_timeouts_and_next_deadline_see_only_running_sandboxes(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let t = now();
    let running = |ends: OffsetDateTime| SandboxRecord {
        state: SandboxState::Running,
        started_at: Some(t - Duration::hours(1)),
        ends_at: Some(ends),
        ..sandbox(project.id, user.id)
    };
    let past = insert(&*store, running(t - Duration::seconds(10))).await;
    let exact = insert(&*store, running(t)).await;
    let future = insert(&*store, running(t + Duration::seconds(30))).await;
    let paused = insert(&*store, running(t - Duration::hours(1))).await;
    set(&*store, &paused, |s| s.state = SandboxState::Paused).await;
    let ended = insert(&*store, running(t - Duration::hours(2))).await;
    set(&*store, &ended, |s| s.state = SandboxState::Terminated).await;

    assert_eq!(store.due_timeouts(t).await.unwrap(), vec![past.id, exact.id], "earliest deadline first");
    assert_eq!(store.due_timeouts(t - Duration::hours(3)).await.unwrap(), vec![]);
    assert_eq!(store.next_deadline().await.unwrap(), Some(t - Duration::seconds(10)));
    set(&*store, &past, |s| s.state = SandboxState::Terminated).await;
    set(&*store, &exact, |s| s.state = SandboxState::Terminated).await;
    assert_eq!(store.next_deadline().await.unwrap(), future.ends_at);
    assert_eq!(store.due_timeouts(t + Duration::minutes(1)).await.unwrap(), vec![future.id]);
}

pub async fn due_retention_sees_only_paused_sandboxes_paused_long_enough(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let t = now();
    let paused = |at: OffsetDateTime| SandboxRecord {
        state: SandboxState::Paused,
        paused_at: Some(at),
        remaining_ms: Some(1000),
        ..sandbox(project.id, user.id)
    };
    let old = insert(&*store, paused(t - Duration::days(8))).await;
    let cutoff_exact = insert(&*store, paused(t - Duration::days(7))).await;
    insert(&*store, paused(t - Duration::days(1))).await;
    let resumed = insert(&*store, paused(t - Duration::days(9))).await;
    set(&*store, &resumed, |s| s.state = SandboxState::Running).await;
    let cutoff = t - Duration::days(7);
    assert_eq!(store.due_retention(cutoff).await.unwrap(), vec![old.id, cutoff_exact.id]);
}

pub async fn count_by_state_counts_every_state(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    for (state, n) in [(SandboxState::Running, 3), (SandboxState::Paused, 1), (SandboxState::Failed, 2)] {
        for _ in 0..n {
            insert(&*store, SandboxRecord { state, ..sandbox(project.id, user.id) }).await;
        }
    }
    let counts = store.count_by_state().await.unwrap();
    assert_eq!(
        counts,
        vec![
            (SandboxState::Provisioning, 0),
            (SandboxState::Running, 3),
            (SandboxState::Paused, 1),
            (SandboxState::Terminated, 0),
            (SandboxState::Failed, 2),
        ]
    );
}

pub async fn sandboxes_in_states_returns_every_match(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let mut want = BTreeSet::new();
    for state in SandboxState::ALL {
        let s = insert(&*store, SandboxRecord { state, ..sandbox(project.id, user.id) }).await;
        if state.is_active() {
            want.insert(s.id);
        }
    }
    let found =
        store.sandboxes_in_states(&[SandboxState::Provisioning, SandboxState::Running]).await.unwrap();
    assert_eq!(found.iter().map(|s| s.id).collect::<BTreeSet<_>>(), want);
    assert!(store.sandboxes_in_states(&[]).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Concurrency and restarts.

pub async fn many_concurrent_writers_never_fail(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let writers: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            let s = sandbox(project.id, user.id);
            tokio::spawn(async move {
                store.insert_sandbox(&s, created()).await?;
                let mut current = store.get_sandbox(&s.id).await?.expect("just inserted");
                for i in 0..5 {
                    current.state_reason = Some(format!("step {i}"));
                    current = store.update_sandbox(&current, Some(NewEvent::progress("step", None))).await?.0;
                    store.append_event(&s.id, NewEvent::progress("tick", None)).await?;
                }
                Ok::<_, StoreError>(s.id)
            })
        })
        .collect();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    store.list_sandboxes(&SandboxFilter::default(), 50, None).await?;
                    store.count_by_state().await?;
                }
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    let mut ids = Vec::new();
    for w in writers {
        ids.push(w.await.unwrap().unwrap());
    }
    for r in readers {
        r.await.unwrap().unwrap();
    }
    for id in ids {
        let s = store.get_sandbox(&id).await.unwrap().unwrap();
        assert_eq!(s.generation, 6);
        let seqs: Vec<u64> = store.list_events(&id, 0, 100).await.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=11).collect::<Vec<_>>());
    }
}

pub async fn concurrent_appends_to_one_sandbox_get_distinct_consecutive_seqs(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let s = insert(&*store, sandbox(project.id, user.id)).await;
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let store = store.clone();
            let id = s.id;
            tokio::spawn(
                async move { store.append_event(&id, NewEvent::progress(format!("{i}"), None)).await },
            )
        })
        .collect();
    let mut seqs = BTreeSet::new();
    for t in tasks {
        assert!(seqs.insert(t.await.unwrap().unwrap().seq));
    }
    assert_eq!(seqs, (2..=31).collect::<BTreeSet<_>>());
}

pub async fn reopening_the_store_keeps_everything(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let key = store
        .create_api_key(NewApiKey {
            user: user.id,
            project: None,
            name: "k".into(),
            hash: [3; 32],
            prefix: "p".into(),
        })
        .await
        .unwrap();
    let revoked = store
        .create_api_key(NewApiKey {
            user: user.id,
            project: None,
            name: "r".into(),
            hash: [4; 32],
            prefix: "q".into(),
        })
        .await
        .unwrap();
    store.revoke_api_key(revoked.id).await.unwrap();
    let s =
        insert(&*store, SandboxRecord { name: Some("keep".into()), ..sandbox(project.id, user.id) }).await;
    let s = set(&*store, &s, |s| {
        s.state = SandboxState::Running;
        s.ends_at = Some(now() + Duration::hours(1));
    })
    .await;
    store.append_event(&s.id, NewEvent::progress("before restart", None)).await.unwrap();
    let events = store.list_events(&s.id, 0, 100).await.unwrap();
    drop(store);

    let store = h.open().await;
    assert!(!store.is_empty().await.unwrap());
    assert_eq!(store.get_user(user.id).await.unwrap(), Some(user));
    assert_eq!(store.get_project(project.id).await.unwrap(), Some(project.clone()));
    assert_eq!(store.find_api_key(&[3; 32]).await.unwrap().unwrap().0, key);
    assert_eq!(store.find_api_key(&[4; 32]).await.unwrap(), None, "a revoked key stays revoked");
    assert_eq!(store.get_sandbox(&s.id).await.unwrap(), Some(s.clone()));
    assert_eq!(store.list_events(&s.id, 0, 100).await.unwrap(), events);
    assert_eq!(store.next_deadline().await.unwrap(), s.ends_at);
    let next = store.append_event(&s.id, NewEvent::progress("after restart", None)).await.unwrap();
    assert_eq!(next.seq, events.len() as u64 + 1);
    let err = store
        .insert_sandbox(
            &SandboxRecord { name: Some("keep".into()), ..sandbox(project.id, s.created_by) },
            created(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { field: "name", .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Property: pagination.

/// One generated sandbox: project index, state index, whether it carries the label.
type Spec = (usize, usize, bool);

pub fn pagination_never_skips_or_repeats_a_sandbox(h: &dyn Harness) {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store = rt.block_on(h.open());
    let user = rt.block_on(store.create_user("prop", Role::Member)).unwrap();
    let mut runner = TestRunner::new(Config { cases: 24, failure_persistence: None, ..Config::default() });
    let strategy = (
        proptest::collection::vec((0..3usize, 0..5usize, any::<bool>()), 0..60),
        1..12u32,
        1..8usize,     // which of the 3 projects to list (bit mask, never empty)
        0..32usize,    // which states to list (bit mask; 0 = all)
        any::<bool>(), // filter on the label
    );
    runner
        .run(&strategy, |(specs, limit, project_mask, state_mask, by_label)| {
            rt.block_on(async {
                let mut ps = Vec::new();
                for _ in 0..3 {
                    ps.push(store.create_project(&unique("prop")).await.unwrap().id);
                }
                let mut made = Vec::new();
                for (p, st, label) in &specs {
                    let mut s = sandbox(ps[*p], user.id);
                    s.state = SandboxState::ALL[*st];
                    if *label {
                        s.metadata.insert("pick".into(), "yes".into());
                    } else {
                        s.metadata.insert("pick".into(), "no".into());
                    }
                    store.insert_sandbox(&s, created()).await.unwrap();
                    made.push(s);
                }
                let listed: Vec<ProjectId> =
                    (0..3).filter(|i| project_mask & (1 << i) != 0).map(|i| ps[i]).collect();
                let states: Vec<SandboxState> =
                    (0..5).filter(|i| state_mask & (1 << i) != 0).map(|i| SandboxState::ALL[i]).collect();
                let filter = SandboxFilter {
                    projects: Some(listed.clone()),
                    states: states.clone(),
                    metadata: if by_label { vec![("pick".into(), "yes".into())] } else { vec![] },
                };
                let expected = newest_first(
                    made.iter()
                        .filter(|s| listed.contains(&s.project))
                        .filter(|s| states.is_empty() || states.contains(&s.state))
                        .filter(|s| !by_label || s.metadata["pick"] == "yes")
                        .map(|s| s.id)
                        .collect(),
                );
                let pages = all_pages(&*store, &filter, limit).await;
                let got = pages.concat();
                prop_assert_eq!(&got, &expected);
                let full_pages = pages.iter().filter(|p| p.len() == limit as usize).count();
                prop_assert!(full_pages >= pages.len().saturating_sub(1), "only the last page may be short");
                prop_assert!(pages.last().is_some_and(|p| !p.is_empty()) || expected.is_empty());
                Ok(())
            })
        })
        .unwrap();
}
