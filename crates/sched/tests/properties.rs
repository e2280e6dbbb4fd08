//! Property tests of the scheduler through its public API: random hosts and random sequences of
//! placements and releases keep every invariant, checked against an independent recount.

#![allow(clippy::unwrap_used)] // Test helpers outside `#[test]` functions.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use sandpit_sched::{
    FreeSlots, GpuAvailability, HostCapacity, PlaceError, Placement, Request, Resource, Scheduler,
    parse_simulated, type_matches,
};
use sandpit_types::api::GpuRequest;
use sandpit_types::{ByteSize, MilliCpu, SandboxId};

const HOST_TYPES: &[&str] = &["T4", "H100", "A100-40GB", "A100-80GB"];
const REQUEST_TYPES: &[&str] = &["T4", "h100", "A100", "A100-80GB", "L40"];
const FRACTIONS: &[u32] = &[25, 50, 75, 100];

fn id(n: u8) -> SandboxId {
    format!("{n:020}").parse().unwrap()
}

fn slots_per_gpu(fraction: u32) -> usize {
    match fraction {
        25 => 4,
        50 => 2,
        _ => 1,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Place(u8, Request),
    Release(u8),
}

fn host_strategy() -> impl Strategy<Value = HostCapacity> {
    (prop::collection::vec((0..HOST_TYPES.len(), 1u32..4), 0..4), 1_000u32..32_000, 1u64..64).prop_map(
        |(entries, cpu, gib)| {
            let spec: Vec<String> = entries.iter().map(|&(t, n)| format!("{}x{n}", HOST_TYPES[t])).collect();
            HostCapacity {
                cpu: MilliCpu(cpu),
                memory: ByteSize::gib(gib),
                gpus: parse_simulated(&spec.join(",")).unwrap(),
            }
        },
    )
}

fn request_strategy() -> impl Strategy<Value = Request> {
    let gpu = prop::option::weighted(
        0.8,
        (0..REQUEST_TYPES.len(), 1u32..4, 0..FRACTIONS.len()).prop_map(|(t, count, f)| GpuRequest {
            gpu_type: REQUEST_TYPES[t].to_string(),
            count,
            fraction: FRACTIONS[f],
        }),
    );
    (0u32..6_000, 0u64..12, gpu).prop_map(|(cpu, gib, gpu)| Request {
        cpu: MilliCpu(cpu),
        memory: ByteSize::gib(gib),
        gpu,
    })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..24, request_strategy()).prop_map(|(n, r)| Op::Place(n, r)),
        1 => (0u8..24).prop_map(Op::Release),
    ]
}

/// Holders of each device by UUID, from the placements alone.
fn usage(model: &BTreeMap<u8, (Request, Placement)>) -> BTreeMap<String, Vec<(u32, u8, u8)>> {
    let mut by_uuid: BTreeMap<String, Vec<(u32, u8, u8)>> = BTreeMap::new();
    for (n, (_, p)) in model {
        for s in &p.gpus {
            by_uuid.entry(s.uuid.clone()).or_default().push((s.fraction, s.slot, *n));
        }
    }
    by_uuid
}

/// What is free, recounted from the placements without the scheduler's own state.
fn expected_availability(
    host: &HostCapacity,
    model: &BTreeMap<u8, (Request, Placement)>,
) -> Vec<GpuAvailability> {
    let used = usage(model);
    let mut groups: BTreeMap<(String, ByteSize, bool), GpuAvailability> = BTreeMap::new();
    for d in &host.gpus {
        let a = groups.entry((d.model.clone(), d.memory, d.simulated)).or_insert(GpuAvailability {
            model: d.model.clone(),
            memory: d.memory,
            total: 0,
            free_whole: 0,
            free_slots: FreeSlots::default(),
            simulated: d.simulated,
        });
        a.total += 1;
        match used.get(&d.uuid).map(Vec::as_slice) {
            None | Some([]) => {
                a.free_whole += 1;
                a.free_slots.quarter += 4;
                a.free_slots.half += 2;
                a.free_slots.three_quarters += 1;
            }
            Some(holders) => {
                let left = u32::try_from(slots_per_gpu(holders[0].0) - holders.len()).unwrap();
                match holders[0].0 {
                    25 => a.free_slots.quarter += left,
                    50 => a.free_slots.half += left,
                    _ => {}
                }
            }
        }
    }
    groups.into_values().collect()
}

/// Whether some single type matching the request has `count` GPUs that could take the share.
fn gpu_request_fits(host: &HostCapacity, model: &BTreeMap<u8, (Request, Placement)>, g: &GpuRequest) -> bool {
    let used = usage(model);
    let mut per_model: BTreeMap<&str, usize> = BTreeMap::new();
    for d in host.gpus.iter().filter(|d| type_matches(&g.gpu_type, &d.model)) {
        let holders = used.get(&d.uuid).map(Vec::as_slice).unwrap_or_default();
        let takes = match holders {
            [] => true,
            [(f, ..), ..] => *f == g.fraction && holders.len() < slots_per_gpu(*f),
        };
        *per_model.entry(&d.model).or_default() += usize::from(takes);
    }
    per_model.values().any(|&n| n >= usize::try_from(g.count).unwrap())
}

fn check_invariants(s: &Scheduler, host: &HostCapacity, model: &BTreeMap<u8, (Request, Placement)>) {
    // No slot is booked twice and no GPU mixes share sizes.
    for (uuid, holders) in usage(model) {
        let fraction = holders[0].0;
        assert!(holders.iter().all(|h| h.0 == fraction), "{uuid} mixes share sizes: {holders:?}");
        let slots: BTreeSet<u8> = holders.iter().map(|h| h.1).collect();
        assert_eq!(slots.len(), holders.len(), "{uuid} has a slot booked twice: {holders:?}");
        assert!(slots.iter().all(|&s| usize::from(s) < slots_per_gpu(fraction)), "{uuid}: {holders:?}");
    }
    // Each placement matches its request, on distinct GPUs of one type.
    for (n, (req, p)) in model {
        assert_eq!(s.reserved(id(*n)), Some(p));
        let Some(g) = &req.gpu else {
            assert!(p.gpus.is_empty());
            continue;
        };
        assert_eq!(p.gpus.len(), usize::try_from(g.count).unwrap());
        let uuids: BTreeSet<&str> = p.gpus.iter().map(|s| s.uuid.as_str()).collect();
        assert_eq!(uuids.len(), p.gpus.len(), "GPUs are distinct");
        assert!(p.gpus.iter().all(|s| s.model == p.gpus[0].model && s.fraction == g.fraction));
        for slot in &p.gpus {
            let d = host.gpus.iter().find(|d| d.uuid == slot.uuid).unwrap();
            assert!(type_matches(&g.gpu_type, &d.model));
            assert_eq!((slot.index, slot.minor, &slot.model), (d.index, d.minor, &d.model));
            let share = u128::from(d.memory.bytes()) * u128::from(g.fraction) / 100;
            assert_eq!(u128::from(slot.memory_share.bytes()), share);
        }
    }
    // CPU and memory never exceed the host.
    let cpu: u32 = model.values().map(|(r, _)| r.cpu.0).sum();
    let memory: u64 = model.values().map(|(r, _)| r.memory.bytes()).sum();
    assert!(cpu <= host.cpu.0 && memory <= host.memory.bytes());
    assert_eq!(s.free_cpu(), MilliCpu(host.cpu.0 - cpu));
    assert_eq!(s.free_memory(), ByteSize(host.memory.bytes() - memory));
    assert_eq!(s.availability(), expected_availability(host, model));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_places_and_releases_keep_every_invariant(
        host in host_strategy(),
        ops in prop::collection::vec(op_strategy(), 1..80),
    ) {
        let mut s = Scheduler::new(host.clone());
        let empty = (s.availability(), s.free_cpu(), s.free_memory());
        let mut model: BTreeMap<u8, (Request, Placement)> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Place(n, req) => {
                    let before = (s.availability(), s.free_cpu(), s.free_memory());
                    match s.place(id(n), &req) {
                        Ok(p) => {
                            prop_assert!(!model.contains_key(&n));
                            model.insert(n, (req, p));
                        }
                        Err(e) => {
                            prop_assert_eq!(&before, &(s.availability(), s.free_cpu(), s.free_memory()));
                            match &e {
                                PlaceError::AlreadyPlaced { .. } => prop_assert!(model.contains_key(&n)),
                                // Never refuses a GPU request that fits.
                                PlaceError::NoGpuCapacity { .. } | PlaceError::TooManyGpus { .. }
                                | PlaceError::UnknownType { .. } => {
                                    let g = req.gpu.as_ref().unwrap();
                                    prop_assert!(!gpu_request_fits(&host, &model, g), "{e}");
                                }
                                PlaceError::NoCapacity { resource, .. } => {
                                    let cpu: u32 = model.values().map(|(r, _)| r.cpu.0).sum();
                                    let mem: u64 = model.values().map(|(r, _)| r.memory.bytes()).sum();
                                    let over = match resource {
                                        Resource::Cpu => cpu + req.cpu.0 > host.cpu.0,
                                        Resource::Memory => mem + req.memory.bytes() > host.memory.bytes(),
                                    };
                                    prop_assert!(over, "{e}");
                                }
                                other => prop_assert!(false, "unexpected {other:?}"),
                            }
                        }
                    }
                }
                Op::Release(n) => prop_assert_eq!(s.release(id(n)), model.remove(&n).is_some()),
            }
            check_invariants(&s, &host, &model);
        }

        // A restart that restores every reservation reproduces the state.
        let mut restarted = Scheduler::new(host.clone());
        for (n, (req, p)) in &model {
            restarted.restore(id(*n), req, p).unwrap();
        }
        check_invariants(&restarted, &host, &model);
        prop_assert_eq!(restarted.availability(), s.availability());

        for n in model.keys() {
            prop_assert!(s.release(id(*n)));
        }
        prop_assert_eq!(empty, (s.availability(), s.free_cpu(), s.free_memory()));
    }

    #[test]
    fn same_size_shares_on_an_empty_host_use_the_fewest_gpus(
        t in 0..HOST_TYPES.len(),
        f in 0..FRACTIONS.len(),
        gpus in 1u32..8,
        k_seed in any::<u32>(),
    ) {
        let fraction = FRACTIONS[f];
        let per_gpu = u32::try_from(slots_per_gpu(fraction)).unwrap();
        let k = k_seed % (gpus * per_gpu) + 1;
        let host = HostCapacity {
            cpu: MilliCpu(1000),
            memory: ByteSize::gib(1),
            gpus: parse_simulated(&format!("{}x{gpus}", HOST_TYPES[t])).unwrap(),
        };
        let mut s = Scheduler::new(host);
        let mut used = BTreeSet::new();
        for n in 0..k {
            let req = Request {
                cpu: MilliCpu(0),
                memory: ByteSize(0),
                gpu: Some(GpuRequest { gpu_type: HOST_TYPES[t].into(), count: 1, fraction }),
            };
            let p = s.place(id(u8::try_from(n).unwrap()), &req).unwrap();
            used.insert(p.gpus[0].index);
        }
        prop_assert_eq!(used.len(), usize::try_from(k.div_ceil(per_gpu)).unwrap());
    }

    #[test]
    fn mixed_share_sizes_still_use_the_fewest_gpus(
        fractions in prop::collection::vec(prop::sample::select(FRACTIONS), 1..24),
    ) {
        let need: u32 = [25u32, 50, 75, 100]
            .iter()
            .map(|&f| {
                let k = u32::try_from(fractions.iter().filter(|&&x| x == f).count()).unwrap();
                k.div_ceil(u32::try_from(slots_per_gpu(f)).unwrap())
            })
            .sum();
        let host = HostCapacity {
            cpu: MilliCpu(1000),
            memory: ByteSize::gib(1),
            gpus: parse_simulated(&format!("H100x{}", need + 2)).unwrap(),
        };
        let mut s = Scheduler::new(host);
        for (n, &fraction) in (0u8..).zip(&fractions) {
            let req = Request {
                cpu: MilliCpu(0),
                memory: ByteSize(0),
                gpu: Some(GpuRequest { gpu_type: "H100".into(), count: 1, fraction }),
            };
            s.place(id(n), &req).unwrap();
        }
        let free_whole = s.availability()[0].free_whole;
        prop_assert_eq!(free_whole, 2, "{} GPUs needed", need);
    }
}
