//! GPU scheduling through the API on a simulated inventory (no GPU on this host): shares fill a
//! GPU before the next, pause frees the slot, resume may land elsewhere, and concurrent creates
//! never get the same slot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use axum::http::StatusCode;
use common::TestServer;
use serde_json::{Value, json};

async fn simulated(spec: &str) -> TestServer {
    let spec = spec.to_string();
    TestServer::start_with(move |c| c.simulate_gpus = Some(spec)).await
}

/// GPU uuid → sandboxes on it, from the stored placements.
async fn placements(s: &TestServer) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let live = s.app.store.sandboxes_in_states(&[sandpit_types::SandboxState::Running]).await.unwrap();
    for r in live {
        if let Some(p) = s.app.placement_of(&r) {
            for slot in p.gpus {
                out.entry(slot.uuid).or_default().push(r.id.to_string());
            }
        }
    }
    out
}

fn gpu_view<'a>(list: &'a Value, ty: &str) -> &'a Value {
    list.as_array().unwrap().iter().find(|g| g["type"] == ty).unwrap()
}

#[tokio::test]
async fn four_quarter_gpus_fill_one_gpu_and_a_fifth_goes_to_another() {
    let s = simulated("H100x2").await;
    let (_, gpus) = s.call("GET", "/v1/gpus", None).await;
    let h100 = gpu_view(&gpus, "H100");
    assert_eq!(
        (h100["total"].as_u64(), h100["free_whole"].as_u64(), h100["free_25"].as_u64()),
        (Some(2), Some(2), Some(8))
    );
    assert_eq!(h100["simulated"], true);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let v = s.create(json!({"memory": "64Mi", "gpu": {"type": "H100", "fraction": 25}})).await;
        assert_eq!(v["gpu"], json!({"type": "H100", "count": 1, "fraction": 25}));
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let by_gpu = placements(&s).await;
    let mut sizes: Vec<usize> = by_gpu.values().map(Vec::len).collect();
    sizes.sort();
    assert_eq!(sizes, [1, 4], "{by_gpu:?}");
    let (_, gpus) = s.call("GET", "/v1/gpus", None).await;
    let h100 = gpu_view(&gpus, "H100");
    assert_eq!(
        (h100["free_whole"].as_u64(), h100["free_25"].as_u64(), h100["free_50"].as_u64()),
        (Some(0), Some(3), Some(0))
    );
    // The simulated GPU is visible to the sandbox as such, without a device.
    let out = s.sh(&ids[0], "echo $SANDPIT_GPU_SIMULATED; ls /dev | grep -c nvidia || true").await;
    assert_eq!(out["stdout"], "1\n0\n");
}

#[tokio::test]
async fn a_full_host_answers_507_saying_what_is_free_and_creates_nothing() {
    let s = simulated("T4x1").await;
    s.create(json!({"memory": "64Mi", "gpu": {"type": "T4"}})).await;
    let (st, e) = s.call("POST", "/v1/sandboxes", Some(json!({"gpu": {"type": "T4", "fraction": 50}}))).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::INSUFFICIENT_STORAGE, Some("no_gpu_capacity")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("T4"), "{e}");
    let (st, e) = s.call("POST", "/v1/sandboxes", Some(json!({"gpu": {"type": "H100"}}))).await;
    assert_eq!((st, e["field"].as_str()), (StatusCode::BAD_REQUEST, Some("gpu.type")), "{e}");
    let (st, e) = s.call("POST", "/v1/sandboxes", Some(json!({"gpu": {"type": "T4", "count": 2}}))).await;
    assert_eq!((st, e["field"].as_str()), (StatusCode::BAD_REQUEST, Some("gpu.count")), "{e}");
    let (_, list) = s.call("GET", "/v1/sandboxes", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "refused creates left nothing");
}

#[tokio::test]
async fn pause_frees_the_gpu_and_resume_schedules_again_or_answers_507() {
    let s = simulated("A10x2").await;
    let a =
        s.create(json!({"memory": "64Mi", "gpu": {"type": "A10"}})).await["id"].as_str().unwrap().to_string();
    let b =
        s.create(json!({"memory": "64Mi", "gpu": {"type": "A10"}})).await["id"].as_str().unwrap().to_string();
    let first_gpu = placements(&s).await.into_iter().find(|(_, v)| v.contains(&a)).unwrap().0;
    s.sh(&a, "echo kept > /root/f").await;
    s.call("POST", &format!("/v1/sandboxes/{a}/pause"), None).await;
    // The freed GPU goes to someone else.
    let c =
        s.create(json!({"memory": "64Mi", "gpu": {"type": "A10"}})).await["id"].as_str().unwrap().to_string();
    let now = placements(&s).await;
    assert!(now[&first_gpu].contains(&c), "{now:?}");
    // Nothing free: resume answers 507 and the sandbox stays paused with its disk.
    let (st, e) = s.call("POST", &format!("/v1/sandboxes/{a}/resume"), None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::INSUFFICIENT_STORAGE, Some("no_gpu_capacity")), "{e}");
    let (_, v) = s.call("GET", &format!("/v1/sandboxes/{a}"), None).await;
    assert_eq!(v["state"], "paused");
    // Free the other GPU: resume lands there.
    s.call("DELETE", &format!("/v1/sandboxes/{b}"), None).await;
    let (st, v) = s.call("POST", &format!("/v1/sandboxes/{a}/resume"), None).await;
    assert_eq!((st, v["state"].as_str()), (StatusCode::OK, Some("running")), "{v}");
    let now = placements(&s).await;
    assert!(!now[&first_gpu].contains(&a), "resumed on the other GPU: {now:?}");
    assert_eq!(s.sh(&a, "cat /root/f").await["stdout"], "kept\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_never_share_a_slot() {
    let s = std::sync::Arc::new(simulated("L4:24Gix2").await);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let s = s.clone();
        tasks.spawn(async move {
            let (st, v) = s
                .call(
                    "POST",
                    "/v1/sandboxes?wait=true",
                    Some(json!({"memory": "64Mi", "gpu": {"type": "L4", "fraction": 25}})),
                )
                .await;
            (st, v)
        });
    }
    let mut created = 0;
    let mut refused = 0;
    while let Some(r) = tasks.join_next().await {
        let (st, v) = r.unwrap();
        match st {
            StatusCode::CREATED => created += 1,
            StatusCode::INSUFFICIENT_STORAGE => refused += 1,
            other => panic!("{other}: {v}"),
        }
    }
    assert_eq!((created, refused), (8, 4));
    let by_gpu = placements(&s).await;
    assert!(by_gpu.values().all(|v| v.len() == 4), "{by_gpu:?}");
    let stored: Vec<_> =
        s.app.store.sandboxes_in_states(&[sandpit_types::SandboxState::Running]).await.unwrap();
    let mut slots = std::collections::HashSet::new();
    for r in stored {
        for slot in s.app.placement_of(&r).unwrap().gpus {
            assert!(slots.insert((slot.uuid, slot.slot)), "a slot was given twice");
        }
    }
}

#[tokio::test]
async fn reservations_survive_a_restart() {
    let s = simulated("H100x1").await;
    s.create(json!({"memory": "64Mi", "gpu": {"type": "H100", "fraction": 50}})).await;
    let dir = s.stop().await;
    let mut c = common::config(&dir.path().join("data"));
    c.simulate_gpus = Some("H100x1".into());
    let server = sandpit_server::Server::start(c, Some(common::KEY.into())).await.unwrap();
    let app = server.app().clone();
    let s = TestServer {
        guard: common::Cleanup(Some(dir.path().join("data"))),
        router: sandpit_server::http::router(app.clone()),
        app,
        dir,
    };
    let (_, gpus) = s.call("GET", "/v1/gpus", None).await;
    assert_eq!(gpu_view(&gpus, "H100")["free_50"], 1, "{gpus}");
    s.create(json!({"memory": "64Mi", "gpu": {"type": "H100", "fraction": 50}})).await;
    let (st, _) =
        s.call("POST", "/v1/sandboxes", Some(json!({"gpu": {"type": "H100", "fraction": 50}}))).await;
    assert_eq!(st, StatusCode::INSUFFICIENT_STORAGE);
}
