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
use sandpit_store::{ApiKeyId, Desired, ProjectId, UserId};
use sandpit_store::{
    KycStatus, LedgerEntry, LedgerFilter, LedgerKind, MemberRole, Membership, NewApiKey, NewCharge, NewEvent,
    Project, Role, SandboxFilter, SandboxRecord, Store, StoreError, User, Wallet, truncate_to_millis,
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
            users_are_listed_by_name_and_found_by_name,
            state_changes_are_the_dated_state_events_with_their_usage,
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
            kyc_status_moves_freely_and_the_reference_finds_the_user,
            kyc_reference_belongs_to_one_user,
            webhook_events_are_recorded_once,
            members_are_added_upserted_removed_and_listed,
            api_keys_are_listed_newest_first_revoked_ones_included,
            wallet_is_created_empty_on_first_read,
            low_threshold_is_set_and_never_negative,
            credit_adds_to_the_balance_and_appends_a_ledger_line,
            refused_credits_change_nothing,
            charge_moves_the_watermark_subtracts_the_sum_and_writes_the_lines,
            charge_with_a_stale_watermark_is_refused_and_changes_nothing,
            charge_that_fails_midway_writes_nothing,
            concurrent_charges_from_one_watermark_let_exactly_one_win,
            ledger_filters_by_project_kind_sandbox_and_time_and_pages,
            sandboxes_to_meter_are_the_live_ones_and_the_ended_ones_not_fully_charged,
            reopening_the_store_keeps_accounts_wallets_and_watermarks,
        );
        store_suite!(@sync $harness;
            pagination_never_skips_or_repeats_a_sandbox,
            random_charges_add_up_exactly_in_the_wallet_and_the_ledger,
        );
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
        placement: None,
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

pub async fn users_are_listed_by_name_and_found_by_name(h: &dyn Harness) {
    let store = h.open().await;
    assert!(store.list_users().await.unwrap().is_empty());
    let b = store.create_user("bob", Role::Member).await.unwrap();
    let a = store.create_user("alice", Role::Admin).await.unwrap();
    assert_eq!(store.list_users().await.unwrap(), vec![a.clone(), b.clone()]);
    assert_eq!(store.user_by_name("bob").await.unwrap(), Some(b));
    assert_eq!(store.user_by_name("carol").await.unwrap(), None);
}

pub async fn state_changes_are_the_dated_state_events_with_their_usage(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let s = insert(&*store, sandbox(project.id, user.id)).await;
    let t1 = now() - Duration::seconds(30);
    let mut r = s.clone();
    r.state = SandboxState::Running;
    let ev = NewEvent::state(SandboxState::Running, None).at(t1).with_usage(Some("{\"cpu\":1}".into()));
    let (r, view) = store.update_sandbox(&r, Some(ev)).await.unwrap();
    assert_eq!(view.unwrap().at, t1, "a state event keeps the time it is given");
    store.append_event(&s.id, NewEvent::progress("working", None)).await.unwrap();
    let t2 = t1 + Duration::milliseconds(12_345);
    let mut p = r.clone();
    p.state = SandboxState::Paused;
    store.update_sandbox(&p, Some(NewEvent::state(SandboxState::Paused, None).at(t2))).await.unwrap();
    let changes = store.state_changes(&s.id).await.unwrap();
    let states: Vec<_> = changes.iter().map(|c| c.state).collect();
    assert_eq!(states, vec![SandboxState::Provisioning, SandboxState::Running, SandboxState::Paused]);
    assert_eq!((changes[1].at, changes[1].usage.as_deref()), (t1, Some("{\"cpu\":1}")));
    assert_eq!((changes[2].at, changes[2].usage.as_deref()), (t2, None));
    assert!(store.state_changes(&SandboxId::generate()).await.unwrap().is_empty());
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
    let err = store.revoke_api_key(ApiKeyId(unscoped.id.0 + 1000)).await.unwrap_err();
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
        placement: Some("{\"gpus\":[]}".into()),
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

// ---------------------------------------------------------------------------------------------
// Accounts: KYC, webhooks, membership, key listing.

pub async fn kyc_status_moves_freely_and_the_reference_finds_the_user(h: &dyn Harness) {
    let store = h.open().await;
    let user = store.create_user(&unique("kyc"), Role::Member).await.unwrap();
    assert_eq!((user.kyc, user.kyc_reference.as_deref()), (KycStatus::Unverified, None));
    assert_eq!(store.get_user(user.id).await.unwrap(), Some(user.clone()), "a new user is unverified");

    let pending = store.set_kyc(user.id, KycStatus::Pending, Some("ref-1")).await.unwrap();
    assert_eq!((pending.kyc, pending.kyc_reference.as_deref()), (KycStatus::Pending, Some("ref-1")));
    assert_eq!(store.get_user(user.id).await.unwrap(), Some(pending.clone()));
    assert_eq!(store.user_by_kyc_reference("ref-1").await.unwrap(), Some(pending.clone()));

    let verified = store.set_kyc(user.id, KycStatus::Verified, None).await.unwrap();
    assert_eq!(verified.kyc_reference.as_deref(), Some("ref-1"), "no reference keeps the current one");
    assert_eq!(verified, User { kyc: KycStatus::Verified, ..pending.clone() });
    let rejected = store.set_kyc(user.id, KycStatus::Rejected, None).await.unwrap();
    assert_eq!(rejected.kyc, KycStatus::Rejected);
    let again = store.set_kyc(user.id, KycStatus::Pending, Some("ref-2")).await.unwrap();
    assert_eq!((again.kyc, again.kyc_reference.as_deref()), (KycStatus::Pending, Some("ref-2")));
    assert_eq!(store.user_by_kyc_reference("ref-1").await.unwrap(), None, "the old reference is gone");
    assert_eq!(store.user_by_kyc_reference("ref-2").await.unwrap(), Some(again.clone()));

    // The user an API key authenticates carries the status.
    store
        .create_api_key(NewApiKey {
            user: user.id,
            project: None,
            name: "k".into(),
            hash: [5; 32],
            prefix: "sp_5".into(),
        })
        .await
        .unwrap();
    assert_eq!(store.find_api_key(&[5; 32]).await.unwrap().unwrap().1, again);

    let err = store.set_kyc(UserId(user.id.0 + 1000), KycStatus::Verified, None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "user" }), "{err:?}");
}

pub async fn kyc_reference_belongs_to_one_user(h: &dyn Harness) {
    let store = h.open().await;
    let a = store.create_user(&unique("a"), Role::Member).await.unwrap();
    let b = store.create_user(&unique("b"), Role::Member).await.unwrap();
    store.set_kyc(a.id, KycStatus::Pending, Some("shared")).await.unwrap();
    let err = store.set_kyc(b.id, KycStatus::Pending, Some("shared")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { field: "kyc_reference", ref value } if value == "shared"),
        "{err:?}"
    );
    assert_eq!(store.get_user(b.id).await.unwrap(), Some(b.clone()), "a refused update changes nothing");
    assert_eq!(store.user_by_kyc_reference("shared").await.unwrap().unwrap().id, a.id);
    // Setting the same reference again on its owner is no conflict.
    store.set_kyc(a.id, KycStatus::Verified, Some("shared")).await.unwrap();
}

pub async fn webhook_events_are_recorded_once(h: &dyn Harness) {
    {
        let store = h.open().await;
        assert!(!store.webhook_seen("evt-seen").await.unwrap());
        assert!(store.record_webhook("evt-seen").await.unwrap());
        assert!(store.webhook_seen("evt-seen").await.unwrap());
    }
    let store = h.open().await;
    assert!(store.record_webhook("evt_1").await.unwrap(), "first delivery");
    assert!(!store.record_webhook("evt_1").await.unwrap(), "a replay");
    assert!(!store.record_webhook("evt_1").await.unwrap(), "another replay");
    assert!(store.record_webhook("evt_2").await.unwrap(), "another event");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.record_webhook("evt_3").await.unwrap() })
        })
        .collect();
    let mut first = 0;
    for t in tasks {
        first += usize::from(t.await.unwrap());
    }
    assert_eq!(first, 1, "concurrent deliveries: exactly one is the first");
}

pub async fn members_are_added_upserted_removed_and_listed(h: &dyn Harness) {
    let store = h.open().await;
    let p = store.create_project(&unique("p")).await.unwrap();
    let q = store.create_project(&unique("q")).await.unwrap();
    let bob = store.create_user(&format!("bob-{}", unique("u")), Role::Member).await.unwrap();
    let alice = store.create_user(&format!("alice-{}", unique("u")), Role::Member).await.unwrap();

    let m = store.add_member(p.id, bob.id, MemberRole::Owner).await.unwrap();
    assert_eq!(m, Membership { project: p.id, user: bob.id, role: MemberRole::Owner });
    store.add_member(p.id, alice.id, MemberRole::Member).await.unwrap();
    store.add_member(q.id, bob.id, MemberRole::Member).await.unwrap();
    let members = store.members(p.id).await.unwrap();
    assert_eq!(
        members,
        vec![
            (Membership { project: p.id, user: alice.id, role: MemberRole::Member }, alice.clone()),
            (Membership { project: p.id, user: bob.id, role: MemberRole::Owner }, bob.clone()),
        ],
        "by user name, with the users"
    );

    // Adding again changes the role, never duplicates.
    let promoted = store.add_member(p.id, alice.id, MemberRole::Owner).await.unwrap();
    assert_eq!(promoted.role, MemberRole::Owner);
    let members = store.members(p.id).await.unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(members[0].0.role, MemberRole::Owner);

    assert_eq!(
        store.memberships(bob.id).await.unwrap(),
        vec![
            Membership { project: p.id, user: bob.id, role: MemberRole::Owner },
            Membership { project: q.id, user: bob.id, role: MemberRole::Member },
        ]
    );
    assert!(store.remove_member(p.id, bob.id).await.unwrap());
    assert!(!store.remove_member(p.id, bob.id).await.unwrap(), "removing twice is a no-op");
    assert_eq!(
        store.memberships(bob.id).await.unwrap().iter().map(|m| m.project).collect::<Vec<_>>(),
        [q.id]
    );
    assert_eq!(store.members(p.id).await.unwrap().iter().map(|m| m.1.id).collect::<Vec<_>>(), [alice.id]);

    let err = store.add_member(ProjectId(q.id.0 + 1000), bob.id, MemberRole::Member).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "project" }), "{err:?}");
    let err = store.add_member(p.id, UserId(alice.id.0 + 1000), MemberRole::Member).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "user" }), "{err:?}");
    assert!(store.members(ProjectId(q.id.0 + 1000)).await.unwrap().is_empty());
    assert!(store.memberships(UserId(alice.id.0 + 1000)).await.unwrap().is_empty());
}

pub async fn api_keys_are_listed_newest_first_revoked_ones_included(h: &dyn Harness) {
    let store = h.open().await;
    let (a, project) = owner(&*store).await;
    let b = store.create_user(&unique("b"), Role::Member).await.unwrap();
    let mut made = Vec::new();
    for (i, user) in [a.id, b.id, a.id, a.id].into_iter().enumerate() {
        let key = store
            .create_api_key(NewApiKey {
                user,
                project: (i % 2 == 0).then_some(project.id),
                name: format!("k{i}"),
                hash: [u8::try_from(i).unwrap() + 100; 32],
                prefix: format!("sp_{i}"),
            })
            .await
            .unwrap();
        made.push(key);
    }
    store.revoke_api_key(made[2].id).await.unwrap();
    let revoked = store.get_api_key(made[2].id).await.unwrap().unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(revoked, sandpit_store::ApiKey { revoked_at: revoked.revoked_at, ..made[2].clone() });
    made[2] = revoked;

    let newest_first =
        |keys: Vec<&sandpit_store::ApiKey>| keys.into_iter().rev().cloned().collect::<Vec<_>>();
    assert_eq!(store.list_api_keys(None).await.unwrap(), newest_first(made.iter().collect()));
    assert_eq!(
        store.list_api_keys(Some(a.id)).await.unwrap(),
        newest_first(made.iter().filter(|k| k.user == a.id).collect()),
        "a user's keys, the revoked one included"
    );
    assert_eq!(store.list_api_keys(Some(b.id)).await.unwrap(), vec![made[1].clone()]);
    assert!(store.list_api_keys(Some(UserId(b.id.0 + 1000))).await.unwrap().is_empty());
    assert_eq!(store.get_api_key(made[0].id).await.unwrap(), Some(made[0].clone()));
    assert_eq!(store.get_api_key(ApiKeyId(made[3].id.0 + 1000)).await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// Money: wallets, credits, charges, the ledger, metering.

/// Sum of a project's credits minus its charges, read from the ledger.
async fn ledger_balance(store: &dyn Store, project: ProjectId) -> i64 {
    let lines =
        store.ledger(&LedgerFilter { projects: Some(vec![project]), ..Default::default() }).await.unwrap();
    lines
        .iter()
        .map(|l| match l.kind {
            LedgerKind::Credit => l.amount,
            LedgerKind::Charge => -l.amount,
        })
        .sum()
}

/// A charge line for `resource` over `(from, to]`.
fn line(resource: &str, amount: i64, from: OffsetDateTime, to: OffsetDateTime) -> NewCharge {
    let seconds = u64::try_from((to - from).whole_seconds()).unwrap();
    NewCharge { resource: resource.into(), amount, seconds, period_from: from, period_to: to }
}

/// A running sandbox started at `started`.
async fn running(
    store: &dyn Store,
    project: ProjectId,
    user: UserId,
    started: OffsetDateTime,
) -> SandboxRecord {
    insert(
        store,
        SandboxRecord {
            state: SandboxState::Running,
            started_at: Some(started),
            ends_at: Some(started + Duration::hours(1)),
            ..sandbox(project, user)
        },
    )
    .await
}

pub async fn wallet_is_created_empty_on_first_read(h: &dyn Harness) {
    let store = h.open().await;
    let (_, project) = owner(&*store).await;
    let before = now();
    let w = store.wallet(project.id).await.unwrap();
    assert_eq!((w.project, w.balance, w.low_threshold), (project.id, 0, 0));
    assert!(w.updated_at >= before);
    assert_eq!(store.wallet(project.id).await.unwrap(), w, "the second read finds the same wallet");
    let err = store.wallet(ProjectId(project.id.0 + 1000)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "project" }), "{err:?}");
    assert!(store.ledger(&LedgerFilter::default()).await.unwrap().is_empty(), "creating writes no line");
}

pub async fn low_threshold_is_set_and_never_negative(h: &dyn Harness) {
    let store = h.open().await;
    let (_, project) = owner(&*store).await;
    let w = store.set_low_threshold(project.id, 5_000_000).await.unwrap();
    assert_eq!((w.balance, w.low_threshold), (0, 5_000_000), "setting it creates the wallet");
    assert_eq!(store.wallet(project.id).await.unwrap(), w);
    let err = store.set_low_threshold(project.id, -1).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidAmount { what: "low_threshold", amount: -1 }), "{err:?}");
    assert_eq!(store.wallet(project.id).await.unwrap().low_threshold, 5_000_000);
    let err = store.set_low_threshold(ProjectId(project.id.0 + 1000), 1).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "project" }), "{err:?}");
}

pub async fn credit_adds_to_the_balance_and_appends_a_ledger_line(h: &dyn Harness) {
    let store = h.open().await;
    let (admin, project) = owner(&*store).await;
    let before = now();
    let (w, entry) = store.credit(project.id, 25_000_000, Some("welcome"), Some(admin.id)).await.unwrap();
    assert_eq!(w.balance, 25_000_000, "crediting a project without a wallet creates it");
    assert!(entry.at >= before);
    assert_eq!(
        entry,
        LedgerEntry {
            id: entry.id,
            project: project.id,
            at: entry.at,
            kind: LedgerKind::Credit,
            amount: 25_000_000,
            sandbox: None,
            resource: None,
            seconds: None,
            period_from: None,
            period_to: None,
            note: Some("welcome".into()),
            created_by: Some(admin.id),
        }
    );
    let (w, second) = store.credit(project.id, 1, None, None).await.unwrap();
    assert_eq!(w.balance, 25_000_001);
    assert!(second.id > entry.id, "ids increase");
    assert_eq!((second.note, second.created_by), (None, None));
    assert_eq!(store.wallet(project.id).await.unwrap(), w);
    let lines = store.ledger(&LedgerFilter::default()).await.unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], entry);
    assert_eq!(ledger_balance(&*store, project.id).await, w.balance);
}

pub async fn refused_credits_change_nothing(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    store.credit(project.id, 10, None, None).await.unwrap();
    let w = store.wallet(project.id).await.unwrap();
    for amount in [0, -5] {
        let err = store.credit(project.id, amount, None, None).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidAmount { what: "amount", amount: a } if a == amount),
            "{err:?}"
        );
    }
    let err = store.credit(project.id, i64::MAX, None, None).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidAmount { what: "balance", .. }), "{err:?}");
    let err = store.credit(project.id, 10, None, Some(UserId(user.id.0 + 1000))).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "user" }), "{err:?}");
    let err = store.credit(ProjectId(project.id.0 + 1000), 10, None, None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "project" }), "{err:?}");
    assert_eq!(store.wallet(project.id).await.unwrap(), w);
    assert_eq!(store.ledger(&LedgerFilter::default()).await.unwrap().len(), 1);
}

pub async fn charge_moves_the_watermark_subtracts_the_sum_and_writes_the_lines(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let t0 = now() - Duration::minutes(10);
    let s = running(&*store, project.id, user.id, t0).await;
    store.credit(project.id, 1_000_000, None, None).await.unwrap();
    let to_meter = store.sandboxes_to_meter().await.unwrap();
    assert_eq!(to_meter.len(), 1);
    assert_eq!((to_meter[0].sandbox.id, to_meter[0].charged_until), (s.id, None), "never charged");

    let t1 = t0 + Duration::seconds(60);
    let before = now();
    let w = store
        .charge(
            &s.id,
            None,
            t1,
            &[line("cpu", 700, t0, t1), line("memory", 300, t0, t1), line("gpu", 0, t0, t1)],
        )
        .await
        .unwrap();
    assert_eq!(w.balance, 1_000_000 - 1000);
    assert_eq!(store.wallet(project.id).await.unwrap(), w);
    assert_eq!(store.sandboxes_to_meter().await.unwrap()[0].charged_until, Some(t1), "the watermark moved");

    let charges =
        store.ledger(&LedgerFilter { kind: Some(LedgerKind::Charge), ..Default::default() }).await.unwrap();
    assert_eq!(charges.len(), 2, "a zero line is not written");
    assert!(charges[0].at >= before);
    assert_eq!(
        charges[0],
        LedgerEntry {
            id: charges[0].id,
            project: project.id,
            at: charges[0].at,
            kind: LedgerKind::Charge,
            amount: 700,
            sandbox: Some(s.id),
            resource: Some("cpu".into()),
            seconds: Some(60),
            period_from: Some(t0),
            period_to: Some(t1),
            note: None,
            created_by: None,
        }
    );
    assert_eq!((charges[1].resource.as_deref(), charges[1].amount), (Some("memory"), 300));

    // The next charge starts from the new watermark; an empty one only moves it.
    let t2 = t1 + Duration::seconds(30);
    let w = store.charge(&s.id, Some(t1), t2, &[line("cpu", 350, t1, t2)]).await.unwrap();
    assert_eq!(w.balance, 1_000_000 - 1350);
    let t3 = t2 + Duration::milliseconds(1500);
    let w2 = store.charge(&s.id, Some(t2), t3, &[]).await.unwrap();
    assert_eq!(w2, w, "nothing charged, the wallet is unchanged");
    assert_eq!(store.sandboxes_to_meter().await.unwrap()[0].charged_until, Some(t3));
    assert_eq!(ledger_balance(&*store, project.id).await, w.balance);

    // A charge may take the balance below zero.
    let t4 = t3 + Duration::seconds(1);
    let w = store.charge(&s.id, Some(t3), t4, &[line("gpu", 5_000_000, t3, t4)]).await.unwrap();
    assert_eq!(w.balance, 1_000_000 - 1350 - 5_000_000);

    // A charge of a project without a wallet creates it.
    let (other_user, other) = owner(&*store).await;
    let o = running(&*store, other.id, other_user.id, t0).await;
    let w = store.charge(&o.id, None, t1, &[line("cpu", 5, t0, t1)]).await.unwrap();
    assert_eq!((w.project, w.balance), (other.id, -5));
}

pub async fn charge_with_a_stale_watermark_is_refused_and_changes_nothing(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let t0 = now() - Duration::minutes(10);
    let t1 = t0 + Duration::seconds(60);
    let s = running(&*store, project.id, user.id, t0).await;
    store.credit(project.id, 10_000, None, None).await.unwrap();
    store.charge(&s.id, None, t1, &[line("cpu", 100, t0, t1)]).await.unwrap();
    let wallet = store.wallet(project.id).await.unwrap();
    let ledger = store.ledger(&LedgerFilter::default()).await.unwrap();

    // The same charge again (a retry that lost the answer), and charges from other watermarks.
    let t2 = t1 + Duration::seconds(60);
    for expected in
        [None, Some(t0), Some(t1 - Duration::milliseconds(1)), Some(t1 + Duration::milliseconds(1))]
    {
        let err = store.charge(&s.id, expected, t2, &[line("cpu", 100, t0, t2)]).await.unwrap_err();
        assert!(matches!(err, StoreError::Stale(id) if id == s.id), "{expected:?}: {err:?}");
    }
    assert_eq!(store.wallet(project.id).await.unwrap(), wallet);
    assert_eq!(store.ledger(&LedgerFilter::default()).await.unwrap(), ledger);
    assert_eq!(store.sandboxes_to_meter().await.unwrap()[0].charged_until, Some(t1));

    // Sub-millisecond parts do not matter: the watermark is kept in milliseconds.
    let precise = t1 + Duration::nanoseconds(999_999);
    store.charge(&s.id, Some(precise), t2, &[]).await.unwrap();
}

pub async fn charge_that_fails_midway_writes_nothing(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let t0 = now() - Duration::minutes(10);
    let t1 = t0 + Duration::seconds(60);
    let s = running(&*store, project.id, user.id, t0).await;
    store.credit(project.id, 10_000, None, None).await.unwrap();
    let wallet = store.wallet(project.id).await.unwrap();

    // The database refuses the second line after the first was written: all of it rolls back.
    let err = store
        .charge(&s.id, None, t1, &[line("cpu", 100, t0, t1), line("tpu", 100, t0, t1)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    // Refused before writing.
    let err = store.charge(&s.id, None, t1, &[line("cpu", -1, t0, t1)]).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidAmount { what: "amount", amount: -1 }), "{err:?}");
    let err = store.charge(&s.id, None, t1, &[line("cpu", i64::MAX, t0, t1), line("gpu", 1, t0, t1)]).await;
    assert!(matches!(err, Err(StoreError::InvalidAmount { what: "balance", .. })), "{err:?}");
    let backwards = NewCharge { period_from: t1, period_to: t0, ..line("cpu", 1, t0, t1) };
    let err = store.charge(&s.id, None, t1, &[backwards]).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidPeriod(id) if id == s.id), "{err:?}");
    let err = store.charge(&SandboxId::generate(), None, t1, &[line("cpu", 1, t0, t1)]).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "sandbox" }), "{err:?}");

    assert_eq!(store.wallet(project.id).await.unwrap(), wallet);
    assert_eq!(store.ledger(&LedgerFilter::default()).await.unwrap().len(), 1, "only the credit");
    assert_eq!(
        store.sandboxes_to_meter().await.unwrap()[0].charged_until,
        None,
        "the watermark did not move"
    );

    // The watermark never goes backwards.
    store.charge(&s.id, None, t1, &[]).await.unwrap();
    let err = store.charge(&s.id, Some(t1), t0, &[]).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidPeriod(_)), "{err:?}");
    assert_eq!(store.sandboxes_to_meter().await.unwrap()[0].charged_until, Some(t1));
}

pub async fn concurrent_charges_from_one_watermark_let_exactly_one_win(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let t0 = now() - Duration::minutes(10);
    let t1 = t0 + Duration::seconds(60);
    let s = running(&*store, project.id, user.id, t0).await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let id = s.id;
            tokio::spawn(async move { store.charge(&id, None, t1, &[line("cpu", 250, t0, t1)]).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Stale(id)) => assert_eq!(id, s.id),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.wallet(project.id).await.unwrap().balance, -250);
    assert_eq!(store.ledger(&LedgerFilter::default()).await.unwrap().len(), 1);
}

pub async fn ledger_filters_by_project_kind_sandbox_and_time_and_pages(h: &dyn Harness) {
    let store = h.open().await;
    let (user, p1) = owner(&*store).await;
    let p2 = store.create_project(&unique("p2")).await.unwrap();
    let t0 = now() - Duration::hours(3);
    let (t1, t2, t3) = (t0 + Duration::hours(1), t0 + Duration::hours(2), t0 + Duration::hours(3));
    let a = running(&*store, p1.id, user.id, t0).await;
    let b = running(&*store, p2.id, user.id, t0).await;
    let credit = store.credit(p1.id, 100, None, None).await.unwrap().1;
    store.charge(&a.id, None, t1, &[line("cpu", 1, t0, t1)]).await.unwrap();
    store.charge(&b.id, None, t1, &[line("cpu", 2, t0, t1)]).await.unwrap();
    store.charge(&a.id, Some(t1), t2, &[line("cpu", 3, t1, t2), line("storage", 4, t1, t2)]).await.unwrap();
    store.charge(&b.id, Some(t1), t3, &[line("gpu", 5, t1, t2), line("gpu", 6, t2, t3)]).await.unwrap();
    let all = store.ledger(&LedgerFilter::default()).await.unwrap();
    assert_eq!(all.len(), 7);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    assert_eq!(all[0], credit);

    let amounts = |filter: LedgerFilter| {
        let store = store.clone();
        async move { store.ledger(&filter).await.unwrap().iter().map(|l| l.amount).collect::<Vec<_>>() }
    };
    let p = |ids: &[ProjectId]| LedgerFilter { projects: Some(ids.to_vec()), ..Default::default() };
    assert_eq!(amounts(p(&[p1.id])).await, [100, 1, 3, 4]);
    assert_eq!(amounts(p(&[p2.id])).await, [2, 5, 6]);
    assert_eq!(amounts(p(&[p1.id, p2.id])).await, [100, 1, 2, 3, 4, 5, 6]);
    assert_eq!(amounts(p(&[])).await, Vec::<i64>::new(), "no project matches nothing");
    assert_eq!(amounts(LedgerFilter { kind: Some(LedgerKind::Credit), ..Default::default() }).await, [100]);
    assert_eq!(
        amounts(LedgerFilter { kind: Some(LedgerKind::Charge), ..p(&[p1.id]) }).await,
        [1, 3, 4],
        "kind and project together"
    );
    assert_eq!(amounts(LedgerFilter { sandbox: Some(b.id), ..Default::default() }).await, [2, 5, 6]);
    // Charges filter on the start of their period: [t1, t2) holds the lines starting at t1.
    let window =
        LedgerFilter { from: Some(t1), to: Some(t2), kind: Some(LedgerKind::Charge), ..Default::default() };
    assert_eq!(amounts(window).await, [3, 4, 5]);
    assert_eq!(
        amounts(LedgerFilter { from: Some(t2), ..Default::default() }).await,
        [100, 6],
        "credits by `at`"
    );
    assert_eq!(amounts(LedgerFilter { to: Some(t1), ..Default::default() }).await, [1, 2]);

    // Pages by id.
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .ledger(&LedgerFilter { after_id: after, limit: Some(3), ..Default::default() })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        after = page.last().map(|l| l.id);
        pages.extend(page);
    }
    assert_eq!(pages, all);
    let one = store.ledger(&LedgerFilter { limit: Some(0), ..Default::default() }).await.unwrap();
    assert_eq!(one.len(), 1, "limit 0 means 1");
}

pub async fn sandboxes_to_meter_are_the_live_ones_and_the_ended_ones_not_fully_charged(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let t0 = now() - Duration::hours(1);
    let end = t0 + Duration::minutes(30);
    let with = |state: SandboxState, started: bool, ended: bool| SandboxRecord {
        state,
        started_at: started.then_some(t0),
        terminated_at: ended.then_some(end),
        ..sandbox(project.id, user.id)
    };
    let mut want = BTreeSet::new();
    // Live: always metered.
    want.insert(insert(&*store, with(SandboxState::Running, true, false)).await.id);
    want.insert(insert(&*store, with(SandboxState::Paused, true, false)).await.id);
    let charged_running = insert(&*store, with(SandboxState::Running, true, false)).await;
    store.charge(&charged_running.id, None, now(), &[]).await.unwrap();
    want.insert(charged_running.id);
    // Never started: nothing to meter.
    insert(&*store, with(SandboxState::Provisioning, false, false)).await;
    insert(&*store, with(SandboxState::Failed, false, true)).await;
    insert(&*store, with(SandboxState::Terminated, false, true)).await;
    // Ended, never charged, or charged up to before the end: its last seconds are due.
    want.insert(insert(&*store, with(SandboxState::Terminated, true, true)).await.id);
    want.insert(insert(&*store, with(SandboxState::Failed, true, true)).await.id);
    let partly = insert(&*store, with(SandboxState::Terminated, true, true)).await;
    store.charge(&partly.id, None, end - Duration::milliseconds(1), &[]).await.unwrap();
    want.insert(partly.id);
    // Ended and charged up to the end (or past it): done.
    let done = insert(&*store, with(SandboxState::Terminated, true, true)).await;
    store.charge(&done.id, None, end, &[]).await.unwrap();
    let past = insert(&*store, with(SandboxState::Failed, true, true)).await;
    store.charge(&past.id, None, end + Duration::seconds(5), &[]).await.unwrap();

    let found = store.sandboxes_to_meter().await.unwrap();
    assert_eq!(found.iter().map(|m| m.sandbox.id).collect::<BTreeSet<_>>(), want);
    assert!(found.windows(2).all(|w| w[0].sandbox.id < w[1].sandbox.id), "by id");
    for m in &found {
        assert_eq!(Some(&m.sandbox), store.get_sandbox(&m.sandbox.id).await.unwrap().as_ref());
    }
    let partly_found = found.iter().find(|m| m.sandbox.id == partly.id).unwrap();
    assert_eq!(partly_found.charged_until, Some(end - Duration::milliseconds(1)));

    // Charging the last seconds takes it off the list.
    store.charge(&partly.id, Some(end - Duration::milliseconds(1)), end, &[]).await.unwrap();
    assert!(!store.sandboxes_to_meter().await.unwrap().iter().any(|m| m.sandbox.id == partly.id));
}

pub async fn reopening_the_store_keeps_accounts_wallets_and_watermarks(h: &dyn Harness) {
    let store = h.open().await;
    let (user, project) = owner(&*store).await;
    let user = store.set_kyc(user.id, KycStatus::Verified, Some("ref-keep")).await.unwrap();
    store.add_member(project.id, user.id, MemberRole::Owner).await.unwrap();
    store.record_webhook("evt-keep").await.unwrap();
    store.set_low_threshold(project.id, 42).await.unwrap();
    store.credit(project.id, 1000, Some("n"), Some(user.id)).await.unwrap();
    let t0 = now() - Duration::minutes(5);
    let t1 = t0 + Duration::minutes(1);
    let s = running(&*store, project.id, user.id, t0).await;
    store.charge(&s.id, None, t1, &[line("cpu", 7, t0, t1)]).await.unwrap();
    let wallet: Wallet = store.wallet(project.id).await.unwrap();
    let ledger = store.ledger(&LedgerFilter::default()).await.unwrap();
    drop(store);

    let store = h.open().await;
    assert_eq!(store.get_user(user.id).await.unwrap(), Some(user.clone()));
    assert_eq!(store.user_by_kyc_reference("ref-keep").await.unwrap(), Some(user.clone()));
    assert_eq!(store.members(project.id).await.unwrap().len(), 1);
    assert!(!store.record_webhook("evt-keep").await.unwrap(), "a replay after a restart is still a replay");
    assert_eq!(store.wallet(project.id).await.unwrap(), wallet);
    assert_eq!((wallet.balance, wallet.low_threshold), (993, 42));
    assert_eq!(store.ledger(&LedgerFilter::default()).await.unwrap(), ledger);
    let err = store.charge(&s.id, None, t1, &[line("cpu", 7, t0, t1)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Stale(_)), "the watermark survives: {err:?}");
    store.charge(&s.id, Some(t1), t1 + Duration::minutes(1), &[]).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Property: charges add up.

/// One generated operation: a charge of sandbox `.0` with these `(resource, amount)` lines over
/// the next `.2` milliseconds (from a stale watermark when `.3`), or a credit when `.1` is empty
/// and `.2` is odd.
type Op = (usize, Vec<(usize, i64)>, i64, bool);

pub fn random_charges_add_up_exactly_in_the_wallet_and_the_ledger(h: &dyn Harness) {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    const RESOURCES: [&str; 4] = ["gpu", "cpu", "memory", "storage"];
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store = rt.block_on(h.open());
    let user = rt.block_on(store.create_user("prop-money", Role::Member)).unwrap();
    let mut runner = TestRunner::new(Config { cases: 16, failure_persistence: None, ..Config::default() });
    let amount = prop_oneof![Just(0i64), 1..1_000i64, 1..1_000_000_000_000i64];
    let strategy = proptest::collection::vec(
        (
            0..4usize,
            proptest::collection::vec((0..4usize, amount), 0..5),
            0..120_000i64,
            proptest::bool::weighted(0.1),
        ),
        1..40,
    );
    runner
        .run(&strategy, |ops: Vec<Op>| {
            rt.block_on(async {
                // Four sandboxes in two projects.
                let ps = [
                    store.create_project(&unique("money")).await.unwrap().id,
                    store.create_project(&unique("money")).await.unwrap().id,
                ];
                let t0 = now() - Duration::days(1);
                let mut sandboxes = Vec::new();
                for i in 0..4 {
                    sandboxes.push(running(&*store, ps[i % 2], user.id, t0).await.id);
                }
                let mut watermark: Vec<Option<OffsetDateTime>> = vec![None; 4];
                let mut expected_balance = [0i64; 2];
                let mut written = [0usize; 2];
                for (i, lines, step, stale) in ops {
                    let p = i % 2;
                    if lines.is_empty() && step % 2 == 1 {
                        store.credit(ps[p], step, None, None).await.unwrap();
                        expected_balance[p] += step;
                        written[p] += 1;
                        continue;
                    }
                    let from = watermark[i].unwrap_or(t0);
                    let until = from + Duration::milliseconds(step);
                    let charges: Vec<NewCharge> =
                        lines.iter().map(|(r, a)| line(RESOURCES[*r], *a, from, until)).collect();
                    if stale {
                        let wrong = Some(watermark[i].map_or(t0, |w| w - Duration::milliseconds(1)));
                        let err = store.charge(&sandboxes[i], wrong, until, &charges).await.unwrap_err();
                        prop_assert!(matches!(err, StoreError::Stale(_)), "{:?}", err);
                        continue;
                    }
                    let w = store.charge(&sandboxes[i], watermark[i], until, &charges).await.unwrap();
                    let sum: i64 = lines.iter().map(|(_, a)| a).sum();
                    expected_balance[p] -= sum;
                    written[p] += lines.iter().filter(|(_, a)| *a > 0).count();
                    prop_assert_eq!(w.balance, expected_balance[p]);
                    watermark[i] = Some(until);
                }
                for p in 0..2 {
                    let wallet = store.wallet(ps[p]).await.unwrap();
                    prop_assert_eq!(wallet.balance, expected_balance[p]);
                    prop_assert_eq!(ledger_balance(&*store, ps[p]).await, expected_balance[p]);
                    let lines = store
                        .ledger(&LedgerFilter { projects: Some(vec![ps[p]]), ..Default::default() })
                        .await
                        .unwrap();
                    prop_assert_eq!(lines.len(), written[p]);
                }
                let metered = store.sandboxes_to_meter().await.unwrap();
                for (i, id) in sandboxes.iter().enumerate() {
                    let m = metered.iter().find(|m| m.sandbox.id == *id).unwrap();
                    prop_assert_eq!(m.charged_until, watermark[i]);
                }
                Ok(())
            })
        })
        .unwrap();
}
