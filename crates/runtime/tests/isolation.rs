//! Isolation defaults: each test attempts an escape from inside a real sandbox and asserts that it
//! fails. The attempts are made by `sandpit-probe` (a static test binary in the test image) and
//! busybox.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Harness, UID_BASE};
use sandpit_init::protocol::{Command, ExecRequest};
use sandpit_runtime::{Backend, ExecEvent};
use sandpit_types::ByteSize;

/// `key=value` lines of probe output.
fn parse(out: &str) -> HashMap<String, String> {
    out.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn sandbox_root_is_an_unprivileged_host_uid() {
    let h = Harness::new().await;
    let id = h.idle().await;
    assert_eq!(h.sh_ok(&id, "id -u").await, "0\n");
    let map = h.sh_ok(&id, "cat /proc/self/uid_map").await;
    let fields: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(fields, ["0", &UID_BASE.to_string(), "65536"]);
    let pid = h.backend.status(&id).await.unwrap().pid.unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.split_whitespace().skip(1).all(|u| u == UID_BASE.to_string()), "{uid_line}");
    // A file created by sandbox root belongs to the unprivileged host uid.
    h.sh_ok(&id, "touch /root/made-inside").await;
    let upper = h.backend.layout().sandbox(&id).upper.join("root/made-inside");
    let meta = std::fs::metadata(&upper).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), UID_BASE);
}

#[tokio::test]
async fn dangerous_capabilities_are_absent() {
    let h = Harness::new().await;
    let id = h.idle().await;
    let caps = parse(&h.sh_ok(&id, "sandpit-probe caps").await);
    for set in ["CapEff", "CapBnd", "CapPrm"] {
        let bits = u64::from_str_radix(&caps[set], 16).unwrap();
        for (name, bit) in
            [("SYS_ADMIN", 21), ("NET_RAW", 13), ("MKNOD", 27), ("SYS_PTRACE", 19), ("SYS_MODULE", 16)]
        {
            assert_eq!(bits & (1 << bit), 0, "CAP_{name} in {set} ({bits:x})");
        }
    }
    assert_eq!(caps["CapAmb"], "0000000000000000");
    let p = parse(&h.sh_ok(&id, "sandpit-probe privileged").await);
    assert_eq!(p["mknod"], "EPERM");
    assert_ne!(p["raw_socket"], "ok");
    assert_ne!(p["packet_socket"], "ok");
}

#[tokio::test]
async fn seccomp_refuses_the_dangerous_system_calls() {
    let h = Harness::new().await;
    let id = h.idle().await;
    let r = parse(&h.sh_ok(&id, "sandpit-probe syscalls").await);
    for call in [
        "mount",
        "unshare",
        "setns",
        "keyctl",
        "add_key",
        "bpf",
        "ptrace",
        "kexec_load",
        "open_by_handle_at",
        "init_module",
        "perf_event_open",
        "io_uring_setup",
        "clone_newuser",
    ] {
        assert_eq!(r.get(call).map(String::as_str), Some("EPERM"), "{call}: {r:?}");
    }
}

#[tokio::test]
async fn proc_and_sys_are_masked_or_read_only() {
    let h = Harness::new().await;
    let id = h.idle().await;
    // Every masked file this kernel has reads as empty inside (/dev/null is mounted over it).
    let files: Vec<&str> =
        ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats"]
            .into_iter()
            .filter(|p| std::path::Path::new(p).exists())
            .collect();
    assert!(!files.is_empty());
    for f in &files {
        let r = parse(&h.sh_ok(&id, &format!("sandpit-probe read {f}")).await);
        assert_eq!(r[&format!("read {f}")], "ok 0", "{f} is not masked");
    }
    // Masked directories are empty.
    for d in ["/proc/acpi", "/sys/firmware"].into_iter().filter(|p| std::path::Path::new(p).exists()) {
        assert_eq!(h.sh_ok(&id, &format!("ls -A {d} | wc -l")).await.trim(), "0", "{d} is not masked");
    }
    let r = parse(
        &h.sh_ok(
            &id,
            "sandpit-probe write /proc/sysrq-trigger h; sandpit-probe write /proc/sys/kernel/hostname evil",
        )
        .await,
    );
    assert_ne!(r["write /proc/sysrq-trigger"], "ok");
    assert_ne!(r["write /proc/sys/kernel/hostname"], "ok");
    assert_ne!(std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim(), "evil");
}

#[tokio::test]
async fn only_loopback_networking() {
    let h = Harness::new().await;
    let id = h.idle().await;
    assert_eq!(h.sh_ok(&id, "ls /sys/class/net").await.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    let devs = h.sh_ok(&id, "tail -n +3 /proc/net/dev | cut -d: -f1").await;
    assert_eq!(devs.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    // Loopback itself works.
    let out = h.sh(&id, "nc -l -p 8123 -e echo served & sleep 0.3; nc 127.0.0.1 8123 </dev/null").await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("served"), "{out:?}");
}

#[tokio::test]
async fn no_host_path_is_visible() {
    let h = Harness::new().await;
    let marker = h.dir.path().join("host-marker");
    std::fs::write(&marker, "host").unwrap();
    let id = h.idle().await;
    let check = format!("test -e {} && echo visible || echo hidden", marker.display());
    assert_eq!(h.sh_ok(&id, &check).await, "hidden\n");
    assert_eq!(h.sh_ok(&id, "test -e /work && echo visible || echo hidden").await, "hidden\n");
    // Mount points are the runtime's standard set, the rootfs and init; nothing from the host.
    let mounts = h.sh_ok(&id, "cut -d' ' -f2 /proc/mounts | sort -u").await;
    let allowed = [
        "/",
        "/.sandpit/init",
        "/dev",
        "/dev/mqueue",
        "/dev/pts",
        "/dev/shm",
        "/proc",
        "/sys",
        "/sys/fs/cgroup",
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
        "/dev/console",
    ];
    for m in mounts.lines() {
        let ok = allowed.contains(&m)
            || m.starts_with("/proc/")
            || m.starts_with("/sys/fs/cgroup/")
            || m.starts_with("/sys/firmware")
            || m.starts_with("/sys/devices/virtual/powercap");
        assert!(ok, "unexpected mount point {m} in\n{mounts}");
    }
    // Init is read-only inside.
    let r = h.sh(&id, "echo x > /.sandpit/init").await;
    assert_ne!(r.status.code, Some(0));
}

#[tokio::test]
async fn the_memory_limit_kills_only_inside_the_sandbox() {
    let h = Harness::new().await;
    let mut spec = h.spec();
    spec.memory = ByteSize::mib(64);
    spec.keep_running = true;
    let id = spec.id;
    h.backend.create(spec).await.unwrap();
    let out = h.sh(&id, "sandpit-probe alloc 512").await;
    assert_eq!(out.status.signal, Some(9), "the allocation is OOM-killed: {:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("alloc=done"), "{text}");
    // The sandbox and its init survive.
    assert_eq!(h.sh_ok(&id, "echo alive").await, "alive\n");
}

#[tokio::test]
async fn a_fork_bomb_stops_at_the_pids_limit_and_a_neighbour_stays_responsive() {
    let h = Harness::new().await;
    let mut spec = h.spec();
    spec.pids_limit = 64;
    let bomb = spec.id;
    h.backend.create(spec).await.unwrap();
    let neighbour = h.idle().await;
    let client = h.backend.init(&bomb).await.unwrap();
    let req = ExecRequest {
        command: Some(Command::Argv(vec!["sandpit-probe".into(), "forkbomb".into(), "3".into()])),
        ..Default::default()
    };
    let mut s = client.exec(req).await.unwrap();
    let first = s.next().await.unwrap().unwrap();
    let ExecEvent::Stdout(line) = first else { panic!("{first:?}") };
    let r: HashMap<String, String> = String::from_utf8_lossy(&line)
        .split_whitespace()
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let forked: u32 = r["forked"].parse().unwrap();
    assert!(forked < 64, "forked {forked} processes despite a limit of 64");
    assert_eq!(r["stopped_by"], "EAGAIN");
    // While the bomb holds every pid it could get, the neighbour answers.
    let started = std::time::Instant::now();
    assert_eq!(h.sh_ok(&neighbour, "echo pong").await, "pong\n");
    assert!(started.elapsed() < Duration::from_secs(3));
    let end = s.collect().await.unwrap();
    assert_eq!(end.status.code, Some(0));
}

#[tokio::test]
async fn filling_the_disk_stops_at_the_sandbox_disk_limit() {
    let h = Harness::new().await;
    let mut spec = h.spec();
    spec.disk = ByteSize::mib(96);
    let id = spec.id;
    h.backend.create(spec).await.unwrap();
    let r = parse(&h.sh_ok(&id, "sandpit-probe fill /root/big").await);
    let filled: u64 = r["filled"].split_whitespace().next().unwrap().parse().unwrap();
    assert!(r["filled"].ends_with("err=ENOSPC"), "{r:?}");
    assert!(filled <= 96 << 20, "wrote {filled} bytes on a 96 MiB disk");
    assert!(filled >= 32 << 20, "only {filled} bytes fit: the disk is too small to be the limit");
    // Space comes back when the file goes; the sandbox keeps working.
    h.sh_ok(&id, "rm /root/big; echo ok > /root/after").await;
    assert_eq!(h.sh_ok(&id, "cat /root/after").await, "ok\n");
}
