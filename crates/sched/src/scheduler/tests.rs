//! Unit tests of the placement rules.

use super::*;
use crate::inventory::parse_simulated;
use sandpit_types::ApiError;

fn id(n: u32) -> SandboxId {
    format!("{n:020}").parse().unwrap()
}

fn host(spec: &str) -> HostCapacity {
    HostCapacity { cpu: MilliCpu(64_000), memory: ByteSize::gib(256), gpus: parse_simulated(spec).unwrap() }
}

fn gpu(gpu_type: &str, count: u32, fraction: u32) -> Request {
    Request {
        cpu: MilliCpu(1000),
        memory: ByteSize::gib(1),
        gpu: Some(GpuRequest { gpu_type: gpu_type.into(), count, fraction }),
    }
}

fn plain(cpu: u32, memory_gib: u64) -> Request {
    Request { cpu: MilliCpu(cpu), memory: ByteSize::gib(memory_gib), gpu: None }
}

/// (index, slot) of each GPU of a placement.
fn where_(p: &Placement) -> Vec<(u32, u8)> {
    p.gpus.iter().map(|s| (s.index, s.slot)).collect()
}

fn slots_of(s: &Scheduler, model: &str) -> FreeSlots {
    s.availability().into_iter().find(|a| a.model == model).unwrap().free_slots
}

#[test]
fn four_quarter_shares_fill_one_gpu_and_a_fifth_opens_another() {
    let mut s = Scheduler::new(host("H100x2"));
    for n in 0..4u8 {
        let p = s.place(id(n.into()), &gpu("H100", 1, 25)).unwrap();
        assert_eq!(where_(&p), vec![(0, n)]);
    }
    let fifth = s.place(id(4), &gpu("H100", 1, 25)).unwrap();
    assert_eq!(where_(&fifth), vec![(1, 0)]);
    assert_eq!(slots_of(&s, "H100"), FreeSlots { quarter: 3, half: 0, three_quarters: 0 });
}

#[test]
fn a_share_goes_to_the_fullest_gpu_of_its_size() {
    let mut s = Scheduler::new(host("T4x3"));
    // GPU 0 gets one quarter, GPU 1 three (a whole sandbox on 0 forces the order).
    s.place(id(0), &gpu("T4", 1, 100)).unwrap();
    for n in 1..=3 {
        assert_eq!(where_(&s.place(id(n), &gpu("T4", 1, 25)).unwrap())[0].0, 1);
    }
    s.release(id(0));
    s.place(id(4), &gpu("T4", 1, 25)).unwrap(); // GPU 1 is fuller than empty GPU 0: slot 3 of 1.
    assert_eq!(s.reserved(id(4)).map(where_), Some(vec![(1, 3)]));
    s.release(id(1));
    s.place(id(5), &gpu("T4", 1, 25)).unwrap(); // Reuses the freed slot 0 of GPU 1.
    assert_eq!(s.reserved(id(5)).map(where_), Some(vec![(1, 0)]));
}

#[test]
fn a_half_share_never_shares_a_gpu_with_quarter_shares() {
    let mut s = Scheduler::new(host("H100x2"));
    s.place(id(0), &gpu("H100", 1, 25)).unwrap();
    let half = s.place(id(1), &gpu("H100", 1, 50)).unwrap();
    assert_eq!(where_(&half), vec![(1, 0)]);
    let half2 = s.place(id(2), &gpu("H100", 1, 50)).unwrap();
    assert_eq!(where_(&half2), vec![(1, 1)]);
    let e = s.place(id(3), &gpu("H100", 1, 50)).unwrap_err();
    assert!(matches!(e, PlaceError::NoGpuCapacity { .. }), "{e:?}");
}

#[test]
fn a_three_quarter_share_takes_a_gpu_alone() {
    let mut s = Scheduler::new(host("L40Sx2"));
    let p = s.place(id(0), &gpu("L40S", 1, 75)).unwrap();
    assert_eq!(where_(&p), vec![(0, 0)]);
    assert_eq!(p.gpus[0].memory_share, ByteSize::gib(36));
    let q = s.place(id(1), &gpu("L40S", 1, 25)).unwrap();
    assert_eq!(where_(&q), vec![(1, 0)], "the 25% does not join the 75%");
    assert!(s.place(id(2), &gpu("L40S", 1, 75)).is_err());
    assert_eq!(slots_of(&s, "L40S"), FreeSlots { quarter: 3, half: 0, three_quarters: 0 });
}

#[test]
fn a_whole_gpu_needs_an_empty_gpu() {
    let mut s = Scheduler::new(host("A10x2"));
    s.place(id(0), &gpu("A10", 1, 25)).unwrap();
    let whole = s.place(id(1), &gpu("A10", 1, 100)).unwrap();
    assert_eq!(where_(&whole), vec![(1, 0)]);
    assert_eq!(whole.gpus[0].memory_share, ByteSize::gib(24));
    let e = s.place(id(2), &gpu("A10", 1, 100)).unwrap_err();
    assert!(matches!(e, PlaceError::NoGpuCapacity { .. }), "{e:?}");
    let e = s.place(id(3), &gpu("A10", 1, 25));
    assert!(e.is_ok(), "a share still fits next to the first quarter");
}

#[test]
fn count_two_lands_on_two_distinct_gpus() {
    let mut s = Scheduler::new(host("H100x3"));
    let p = s.place(id(0), &gpu("H100", 2, 25)).unwrap();
    assert_eq!(where_(&p), vec![(0, 0), (1, 0)]);
    let q = s.place(id(1), &gpu("H100", 2, 25)).unwrap();
    assert_eq!(where_(&q), vec![(0, 1), (1, 1)], "best fit: the GPUs already in use");
    let w = s.place(id(2), &gpu("H100", 2, 100));
    assert!(matches!(w, Err(PlaceError::NoGpuCapacity { .. })), "only one empty GPU left");
    let p3 = s.place(id(3), &gpu("H100", 3, 25)).unwrap();
    assert_eq!(where_(&p3), vec![(0, 2), (1, 2), (2, 0)]);
}

#[test]
fn a_family_alias_places_all_gpus_on_one_type() {
    let mut s = Scheduler::new(host("A100-40GBx1,A100-80GBx1,A100-80GBx1"));
    let p = s.place(id(0), &gpu("a100", 2, 100)).unwrap();
    assert_eq!(where_(&p), vec![(1, 0), (2, 0)]);
    assert!(p.gpus.iter().all(|g| g.model == "A100-80GB"));
    let q = s.place(id(1), &gpu("A100", 1, 50)).unwrap();
    assert_eq!(q.gpus[0].model, "A100-40GB");
    let e = s.place(id(2), &gpu("A100", 3, 25)).unwrap_err();
    assert_eq!(
        e,
        PlaceError::TooManyGpus { gpu_type: "A100".into(), requested: 3, total: 2 },
        "three GPUs of one type do not exist"
    );
}

#[test]
fn release_frees_the_slot_and_is_idempotent() {
    let mut s = Scheduler::new(host("T4x1"));
    let before = (s.availability(), s.free_cpu(), s.free_memory());
    s.place(id(0), &gpu("T4", 1, 50)).unwrap();
    s.place(id(1), &gpu("T4", 1, 50)).unwrap();
    assert!(s.place(id(2), &gpu("T4", 1, 50)).is_err());
    assert!(s.release(id(0)));
    assert!(!s.release(id(0)));
    assert_eq!(s.reserved(id(0)), None);
    assert_eq!(where_(&s.place(id(2), &gpu("T4", 1, 50)).unwrap()), vec![(0, 0)]);
    assert!(s.release(id(1)) && s.release(id(2)));
    assert_eq!((s.availability(), s.free_cpu(), s.free_memory()), before);
    assert!(s.place(id(3), &gpu("T4", 1, 100)).is_ok(), "an empty GPU takes any share size again");
}

#[test]
fn the_507_message_lists_what_is_free() {
    let mut s = Scheduler::new(host("H100x2"));
    s.place(id(0), &gpu("H100", 1, 50)).unwrap();
    s.place(id(1), &gpu("H100", 1, 50)).unwrap();
    s.place(id(2), &gpu("H100", 1, 25)).unwrap();
    s.place(id(3), &gpu("H100", 1, 25)).unwrap();
    s.place(id(4), &gpu("H100", 1, 25)).unwrap();
    let e = s.place(id(5), &gpu("H100", 1, 50)).unwrap_err();
    assert_eq!(e.to_string(), "no H100 has a free 50% share: 2 H100 in all, 0 whole free, 1 free 25% slot");
    let api = ApiError::from(e);
    assert_eq!((api.status(), api.code()), (507, "no_gpu_capacity"));
    s.release(id(0));
    let e = s.place(id(5), &gpu("H100", 2, 100)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "fewer than 2 H100 GPUs are free as whole GPUs (0 are): 2 H100 in all, 0 whole free, \
         1 free 25% slot, 1 free 50% slot"
    );
    let e = s.place(id(5), &gpu("H100", 1, 100)).unwrap_err();
    assert!(e.to_string().starts_with("no H100 is free as a whole GPU: "), "{e}");
}

#[test]
fn an_unknown_type_names_the_gpu_type_field_and_the_types_there_are() {
    let mut s = Scheduler::new(host("T4x1,H100x2"));
    let e = s.place(id(0), &gpu("H200", 1, 100)).unwrap_err();
    assert_eq!(
        e,
        PlaceError::UnknownType { requested: "H200".into(), available: vec!["H100".into(), "T4".into()] }
    );
    let api = ApiError::from(e);
    assert_eq!(api.status(), 400);
    assert_eq!(api.body().field.as_deref(), Some("gpu.type"));
    assert_eq!(api.body().message, "no H200 GPU on this server; it has H100, T4");
    let none = Scheduler::new(host("")).place(id(0), &gpu("T4", 1, 100)).unwrap_err();
    assert_eq!(none.to_string(), "no T4 GPU on this server: it has no GPUs");
}

#[test]
fn too_many_gpus_names_the_gpu_count_field() {
    let mut s = Scheduler::new(host("T4x2"));
    let e = s.place(id(0), &gpu("T4", 3, 25)).unwrap_err();
    assert_eq!(e, PlaceError::TooManyGpus { gpu_type: "T4".into(), requested: 3, total: 2 });
    let api = ApiError::from(e);
    assert_eq!((api.status(), api.body().field.as_deref()), (400, Some("gpu.count")));
    assert!(api.to_string().contains("3 T4 GPUs requested, but this server has 2"), "{api}");
}

#[test]
fn malformed_gpu_requests_name_their_field() {
    let mut s = Scheduler::new(host("T4x2"));
    let bad_fraction = ApiError::from(s.place(id(0), &gpu("T4", 1, 30)).unwrap_err());
    assert_eq!(bad_fraction.body().field.as_deref(), Some("gpu.fraction"));
    let zero = ApiError::from(s.place(id(0), &gpu("T4", 0, 25)).unwrap_err());
    assert_eq!(zero.body().field.as_deref(), Some("gpu.count"));
}

#[test]
fn cpu_and_memory_beyond_capacity_are_refused_with_503() {
    let h = HostCapacity { cpu: MilliCpu(4000), memory: ByteSize::gib(8), gpus: vec![] };
    let mut s = Scheduler::new(h);
    s.place(id(0), &plain(3000, 6)).unwrap();
    let e = s.place(id(1), &plain(1500, 1)).unwrap_err();
    assert_eq!(
        e,
        PlaceError::NoCapacity {
            resource: Resource::Cpu,
            message: "not enough CPU: 1500m requested, 1 free of 4".into()
        }
    );
    let e = s.place(id(1), &plain(1000, 3)).unwrap_err();
    assert_eq!(
        e,
        PlaceError::NoCapacity {
            resource: Resource::Memory,
            message: "not enough memory: 3Gi requested, 2Gi free of 8Gi".into()
        }
    );
    let api = ApiError::from(e);
    assert_eq!((api.status(), api.code()), (503, "no_capacity"));
    assert!(s.place(id(1), &plain(1000, 2)).is_ok(), "exactly what is left fits");
    assert_eq!((s.free_cpu(), s.free_memory()), (MilliCpu(0), ByteSize(0)));
}

#[test]
fn cpu_overcommit_raises_the_cpu_limit_only() {
    let h = HostCapacity { cpu: MilliCpu(2000), memory: ByteSize::gib(8), gpus: vec![] };
    let mut s = Scheduler::new(h).with_cpu_overcommit("1.5".parse().unwrap());
    assert_eq!(s.free_cpu(), MilliCpu(3000));
    s.place(id(0), &plain(3000, 1)).unwrap();
    assert!(s.place(id(1), &plain(1, 1)).is_err());
    assert!(s.place(id(1), &plain(0, 8)).is_err(), "memory is not overcommitted");
}

#[test]
fn overcommit_factors_parse_and_print() {
    for (text, percent, shown) in
        [("1", 100, "1"), ("1.5", 150, "1.5"), ("1.25", 125, "1.25"), ("150%", 150, "1.5"), (" 2 ", 200, "2")]
    {
        let o: Overcommit = text.parse().unwrap();
        assert_eq!((o.percent(), o.to_string().as_str()), (percent, shown), "{text}");
    }
    for bad in ["", "0.5", "11", "1.234", "x", "-1", "1.", "%", "99999999999"] {
        assert!(bad.parse::<Overcommit>().is_err(), "{bad:?}");
    }
    assert_eq!(Overcommit::default(), Overcommit::NONE);
}

#[test]
fn a_refused_request_reserves_nothing() {
    let h = HostCapacity { cpu: MilliCpu(1000), memory: ByteSize::gib(8), ..host("T4x1") };
    let mut s = Scheduler::new(h);
    let before = (s.availability(), s.free_cpu(), s.free_memory());
    let mut big = gpu("T4", 1, 25);
    big.cpu = MilliCpu(2000);
    assert!(matches!(s.place(id(0), &big), Err(PlaceError::NoCapacity { resource: Resource::Cpu, .. })));
    assert_eq!((s.availability(), s.free_cpu(), s.free_memory()), before);
    assert_eq!(s.reserved(id(0)), None);
}

#[test]
fn a_sandbox_cannot_be_placed_twice() {
    let mut s = Scheduler::new(host("T4x2"));
    s.place(id(0), &gpu("T4", 1, 25)).unwrap();
    assert_eq!(s.place(id(0), &gpu("T4", 1, 25)), Err(PlaceError::AlreadyPlaced { id: id(0) }));
}

#[test]
fn placements_carry_device_nodes_and_bill_their_usage() {
    let mut h = host("T4x1,H200x2");
    h.gpus[2].minor = 7;
    let mut s = Scheduler::new(h);
    let p = s.place(id(0), &gpu("h200", 2, 50)).unwrap();
    assert_eq!(
        p.gpus[1],
        GpuSlot {
            index: 2,
            minor: 7,
            uuid: "GPU-sim-H200-1".into(),
            model: "H200".into(),
            memory_share: ByteSize(ByteSize::gib(141).bytes() / 2),
            fraction: 50,
            slot: 0,
        }
    );
    assert_eq!(p.billing(), Some(GpuUsage { model: "H200".into(), count: 2, fraction: 50 }));
    assert_eq!(s.place(id(1), &plain(1, 1)).unwrap().billing(), None);
}

#[test]
fn availability_groups_by_type_sorted() {
    let mut s = Scheduler::new(host("T4x2,H100x1,A10x1"));
    s.place(id(0), &gpu("T4", 1, 25)).unwrap();
    let a = s.availability();
    let models: Vec<&str> = a.iter().map(|g| g.model.as_str()).collect();
    assert_eq!(models, ["A10", "H100", "T4"]);
    let t4 = &a[2];
    assert_eq!((t4.total, t4.free_whole, t4.simulated), (2, 1, true));
    assert_eq!(t4.free_slots, FreeSlots { quarter: 7, half: 2, three_quarters: 1 });
    let json = serde_json::to_value(t4).unwrap();
    assert_eq!(json["free_slots"], serde_json::json!({"25": 7, "50": 2, "75": 1}));
    assert_eq!(json["memory"], "16Gi");
}

#[test]
fn restore_after_a_restart_reproduces_availability() {
    let mut before = Scheduler::new(host("H100x2,T4x2"));
    let reqs = [gpu("H100", 1, 25), gpu("H100", 1, 25), gpu("T4", 2, 50), gpu("H100", 1, 100), plain(500, 2)];
    let mut saved = Vec::new();
    for (n, r) in (0..).zip(&reqs) {
        saved.push((id(n), r.clone(), before.place(id(n), r).unwrap()));
    }
    before.release(id(0)); // A hole at slot 0 of GPU 0 must survive the restart.
    saved.remove(0);

    let mut after = Scheduler::new(host("H100x2,T4x2"));
    for (i, r, p) in &saved {
        after.restore(*i, r, p).unwrap();
        assert_eq!(after.reserved(*i), Some(p));
    }
    assert_eq!(after.availability(), before.availability());
    assert_eq!((after.free_cpu(), after.free_memory()), (before.free_cpu(), before.free_memory()));
    // Both place the next quarter in the same hole.
    let next = gpu("H100", 1, 25);
    assert_eq!(after.place(id(9), &next).unwrap(), before.place(id(9), &next).unwrap());
}

#[test]
fn restore_finds_gpus_by_uuid_and_takes_their_current_index() {
    let mut s = Scheduler::new(host("T4x2"));
    let p = s.place(id(0), &gpu("T4", 1, 100)).unwrap();
    let mut moved = host("T4x2");
    moved.gpus.reverse();
    for (i, d) in (0..).zip(&mut moved.gpus) {
        d.index = i;
        d.minor = i;
    }
    let mut after = Scheduler::new(moved);
    after.restore(id(0), &gpu("T4", 1, 100), &p).unwrap();
    let restored = after.reserved(id(0)).unwrap();
    assert_eq!((restored.gpus[0].uuid.as_str(), restored.gpus[0].index), ("GPU-sim-T4-0", 1));
}

#[test]
fn restore_refuses_conflicts_and_reserves_nothing_then() {
    let mut s = Scheduler::new(host("T4x2,H100x1"));
    let quarter = s.place(id(0), &gpu("T4", 1, 25)).unwrap();
    let half_req = gpu("T4", 1, 50);
    let before = (s.availability(), s.free_cpu(), s.free_memory());
    let conflict = |s: &mut Scheduler, n, r: &Request, p: &Placement| match s.restore(id(n), r, p) {
        Err(PlaceError::RestoreConflict { conflict, .. }) => conflict,
        other => panic!("expected a conflict, got {other:?}"),
    };

    // The same slot again.
    let c = conflict(&mut s, 1, &gpu("T4", 1, 25), &quarter);
    assert_eq!(c, RestoreConflict::SlotTaken { uuid: "GPU-sim-T4-0".into(), slot: 0, holder: id(0) });
    // A half share on a GPU holding quarters.
    let mut half = quarter.clone();
    half.gpus[0].fraction = 50;
    let c = conflict(&mut s, 1, &half_req, &half);
    assert_eq!(c, RestoreConflict::OtherClass { uuid: "GPU-sim-T4-0".into(), held: 25, wanted: 50 });
    // A GPU the host does not have.
    let mut gone = half.clone();
    gone.gpus[0].uuid = "GPU-gone".into();
    assert!(matches!(conflict(&mut s, 1, &half_req, &gone), RestoreConflict::UnknownGpu { .. }));
    // A slot a half share does not have.
    let mut high = half.clone();
    high.gpus[0].uuid = "GPU-sim-T4-1".into();
    high.gpus[0].slot = 2;
    assert!(matches!(conflict(&mut s, 1, &half_req, &high), RestoreConflict::NoSuchSlot { .. }));
    // A placement that does not match its request.
    assert!(matches!(conflict(&mut s, 1, &gpu("T4", 2, 50), &half), RestoreConflict::ShapeMismatch { .. }));
    assert!(matches!(conflict(&mut s, 1, &plain(1, 1), &half), RestoreConflict::ShapeMismatch { .. }));
    let mut h100 = half.clone();
    h100.gpus[0].uuid = "GPU-sim-H100-0".into();
    assert!(matches!(conflict(&mut s, 1, &half_req, &h100), RestoreConflict::WrongType { .. }));
    // The same GPU twice.
    let mut twice = high.clone();
    twice.gpus[0].slot = 0;
    twice.gpus.push(twice.gpus[0].clone());
    assert!(matches!(conflict(&mut s, 1, &gpu("T4", 2, 50), &twice), RestoreConflict::DuplicateGpu { .. }));
    // A sandbox that already holds a reservation.
    assert_eq!(s.restore(id(0), &gpu("T4", 1, 25), &quarter), Err(PlaceError::AlreadyPlaced { id: id(0) }));
    // More CPU than there is.
    let mut greedy = plain(64_001, 1);
    assert!(matches!(s.restore(id(1), &greedy, &Placement::default()), Err(PlaceError::NoCapacity { .. })));
    greedy.cpu = MilliCpu(1);

    assert_eq!((s.availability(), s.free_cpu(), s.free_memory()), before);
    assert_eq!(s.reserved(id(1)), None);
    assert!(s.restore(id(1), &greedy, &Placement::default()).is_ok());
    let e = ApiError::from(PlaceError::AlreadyPlaced { id: id(0) });
    assert_eq!(e.status(), 409);
}
