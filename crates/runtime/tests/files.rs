//! File operations, all performed inside the sandbox by its init.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use common::Harness;
use sandpit_init::protocol::{ErrorCode, FileKind};
use sandpit_runtime::{Backend, RuntimeError, WriteOptions};
use sandpit_types::ByteSize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

fn init_code(e: &RuntimeError) -> Option<ErrorCode> {
    match e {
        RuntimeError::Init { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn files_are_written_read_listed_moved_and_removed_inside_the_sandbox() {
    let h = Harness::new().await;
    let id = h.idle().await;
    let c = h.backend.init(&id).await.unwrap();
    let e = c.write_file("/data/deep/hello.txt", WriteOptions::default(), &b"hello world"[..]).await.unwrap();
    assert_eq!((e.kind, e.size, e.path.as_str()), (FileKind::File, 11, "/data/deep/hello.txt"));
    assert_eq!(h.sh_ok(&id, "cat /data/deep/hello.txt").await, "hello world");
    assert_eq!(c.read_to_vec("/data/deep/hello.txt").await.unwrap(), b"hello world");

    let st = c.stat("/data/deep", None).await.unwrap();
    assert_eq!(st.kind, FileKind::Dir);
    c.make_dir("/data/deep/sub/more", None, true).await.unwrap();
    let list = c.list_dir("/data", None, 2).await.unwrap();
    let names: Vec<&str> = list.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, ["/data/deep", "/data/deep/hello.txt", "/data/deep/sub"]);
    assert!(list.iter().all(|e| e.mtime_ns > 0));

    c.rename("/data/deep/hello.txt", "/data/moved.txt", None).await.unwrap();
    assert_eq!(c.read_to_vec("/data/moved.txt").await.unwrap(), b"hello world");
    let gone = c.stat("/data/deep/hello.txt", None).await.unwrap_err();
    assert_eq!(init_code(&gone), Some(ErrorCode::NotFound));

    let not_empty = c.remove("/data/deep", None, false).await.unwrap_err();
    assert_eq!(init_code(&not_empty), Some(ErrorCode::DirectoryNotEmpty));
    c.remove("/data/deep", None, true).await.unwrap();
    assert_eq!(h.sh_ok(&id, "ls /data").await, "moved.txt\n");

    // Written as a user, the file is theirs.
    let opts = WriteOptions { user: Some("user".into()), ..Default::default() };
    let e = c.write_file("/home/user/mine", opts, &b"x"[..]).await.unwrap();
    assert_eq!((e.uid, e.owner.as_deref()), (1000, Some("user")));
    let denied = c
        .write_file(
            "/root/not-yours",
            WriteOptions { user: Some("user".into()), ..Default::default() },
            &b"x"[..],
        )
        .await
        .unwrap_err();
    assert_eq!(init_code(&denied), Some(ErrorCode::PermissionDenied));
}

#[tokio::test]
async fn a_symlink_planted_in_the_sandbox_never_reaches_a_host_file() {
    let h = Harness::new().await;
    let secret = h.dir.path().join("host-secret");
    std::fs::write(&secret, "HOST SECRET").unwrap();
    let id = h.idle().await;
    let c = h.backend.init(&id).await.unwrap();
    let s = secret.display();
    h.sh_ok(
        &id,
        &format!("ln -s {s} /tmp/abs; ln -s ../../../../../../../..{s} /tmp/rel; ln -s /proc/1/fd /tmp/initfds; ln -s /proc/1/root/../../../.. /tmp/up"),
    )
    .await;
    for link in ["/tmp/abs", "/tmp/rel"] {
        let r = c.read_to_vec(link).await;
        assert_eq!(r.as_ref().err().and_then(init_code), Some(ErrorCode::NotFound), "{link}: {r:?}");
    }
    // Writing to the link replaces it inside the sandbox; appending follows it, inside the
    // sandbox too. The host file is never touched.
    c.write_file("/tmp/abs", WriteOptions::default(), &b"overwritten"[..]).await.unwrap();
    assert_eq!(h.sh_ok(&id, "cat /tmp/abs").await, "overwritten");
    // Appending through a dangling link creates nothing; through a live one it reaches the
    // sandbox's own file of that name.
    let append = WriteOptions { append: true, ..Default::default() };
    let dangling = c.write_file("/tmp/rel", append.clone(), &b"appended"[..]).await.unwrap_err();
    assert_eq!(init_code(&dangling), Some(ErrorCode::NotFound));
    h.sh_ok(&id, &format!("mkdir -p {}; echo inside > {s}", secret.parent().unwrap().display())).await;
    c.write_file("/tmp/rel", append, &b"appended"[..]).await.unwrap();
    assert_eq!(h.sh_ok(&id, &format!("cat {s}")).await, "inside\nappended");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "HOST SECRET");
    // Init's own host descriptors (log, status, socket) are out of reach through /proc.
    for path in ["/proc/1/fd/4", "/tmp/initfds/4", "/proc/self/fd/4"] {
        let r = c.read_to_vec(path).await;
        assert!(r.is_err(), "{path} was readable: {r:?}");
    }
    // /proc/1/root is a magic link: refused rather than followed.
    let up = c.list_dir("/tmp/up", None, 1).await.unwrap_err();
    assert_eq!(init_code(&up), Some(ErrorCode::InvalidArgument), "{up:?}");
}

/// Deterministic pseudo-random bytes (xorshift), produced on the fly.
struct Generator {
    left: u64,
    state: u64,
}

impl Generator {
    fn new(size: u64) -> Self {
        Self { left: size, state: 0x9e37_79b9_7f4a_7c15 }
    }

    fn next_chunk(&mut self, max: usize) -> Vec<u8> {
        let n = usize::try_from(self.left).unwrap_or(usize::MAX).min(max);
        let mut chunk = vec![0u8; n];
        for b in chunk.chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            b.copy_from_slice(&self.state.to_le_bytes()[..b.len()]);
        }
        self.left -= n as u64;
        chunk
    }
}

impl AsyncRead for Generator {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let chunk = self.next_chunk(buf.remaining().min(64 * 1024));
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    l.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_gib_file_round_trips_with_bounded_memory() {
    const SIZE: u64 = 1 << 30;
    let h = Harness::new().await;
    let mut spec = h.spec();
    spec.disk = ByteSize::gib(2);
    let id = spec.id;
    let init_pid = h.backend.create(spec).await.unwrap().pid.unwrap();
    let c = h.backend.init(&id).await.unwrap();

    let mut sent = Sha256::new();
    let mut twin = Generator::new(SIZE);
    loop {
        let chunk = twin.next_chunk(1 << 20);
        if chunk.is_empty() {
            break;
        }
        sent.update(&chunk);
    }
    let sent = sent.finalize();

    let peak = Arc::new(AtomicU64::new(0));
    let p = peak.clone();
    let sampler = tokio::spawn(async move {
        loop {
            p.fetch_max(vm_rss_kib(init_pid), Ordering::Relaxed);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    let entry = c.write_file("/root/big.bin", WriteOptions::default(), Generator::new(SIZE)).await.unwrap();
    assert_eq!(entry.size, SIZE);
    let (entry, mut r) = c.read_file("/root/big.bin", None, 0, None).await.unwrap();
    assert_eq!(entry.size, SIZE);
    let mut got = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = r.next_chunk().await.unwrap() {
        n += chunk.len() as u64;
        got.update(&chunk);
    }
    sampler.abort();
    assert_eq!(n, SIZE);
    assert_eq!(got.finalize(), sent, "content differs after the round trip");
    let init_peak = peak.load(Ordering::Relaxed);
    assert!(init_peak > 0 && init_peak < 32 * 1024, "init peaked at {init_peak} KiB during a 1 GiB transfer");
    let own = vm_rss_kib(std::process::id());
    assert!(own < 256 * 1024, "the test process holds {own} KiB: the transfer was not streamed");
}
