//! `sandpit-probe`: a test helper that runs inside a sandbox and attempts escapes, printing what
//! happened. The runtime's isolation tests put it into a test image and assert on its output.
//! It is never part of a production image.
//!
//! Output is one `key=value` line per attempt, values being `ok` or an errno name.

use std::ffi::CString;
use std::io::Write;

fn errno_name(e: i32) -> String {
    match e {
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        libc::ENOSYS => "ENOSYS".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EAGAIN => "EAGAIN".into(),
        libc::ENOSPC => "ENOSPC".into(),
        libc::EDQUOT => "EDQUOT".into(),
        libc::EROFS => "EROFS".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EBADF => "EBADF".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::EIO => "EIO".into(),
        other => format!("E{other}"),
    }
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn result(rc: i64) -> String {
    if rc < 0 { errno_name(last_errno()) } else { "ok".into() }
}

/// Attempts each dangerous system call with harmless arguments.
fn syscalls() {
    let target = CString::new("/tmp").unwrap_or_default();
    let none = CString::new("none").unwrap_or_default();
    let tmpfs = CString::new("tmpfs").unwrap_or_default();
    let mut attempts: Vec<(&str, i64)> = Vec::new();
    // SAFETY: every call below passes valid pointers to live CStrings or null/zero arguments; the
    // point is to see the kernel (or seccomp) refuse them.
    unsafe {
        attempts.push((
            "mount",
            libc::syscall(
                libc::SYS_mount,
                none.as_ptr(),
                target.as_ptr(),
                tmpfs.as_ptr(),
                0,
                std::ptr::null::<u8>(),
            ),
        ));
        attempts.push(("unshare", libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS | libc::CLONE_NEWUSER)));
        attempts.push(("setns", libc::syscall(libc::SYS_setns, 0, 0)));
        attempts.push(("keyctl", libc::syscall(libc::SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0)));
        attempts.push(("add_key", libc::syscall(libc::SYS_add_key, none.as_ptr(), none.as_ptr(), 0, 0, -3)));
        attempts.push(("bpf", libc::syscall(libc::SYS_bpf, 0, 0, 0)));
        attempts.push(("ptrace", libc::syscall(libc::SYS_ptrace, libc::PTRACE_ATTACH, 1, 0, 0)));
        attempts.push(("kexec_load", libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0)));
        attempts.push(("open_by_handle_at", libc::syscall(libc::SYS_open_by_handle_at, -1, 0, 0)));
        attempts.push(("init_module", libc::syscall(libc::SYS_init_module, 0, 0, none.as_ptr())));
        attempts.push(("perf_event_open", libc::syscall(libc::SYS_perf_event_open, 0, 0, -1, -1, 0)));
        attempts.push(("io_uring_setup", libc::syscall(libc::SYS_io_uring_setup, 1, 0)));
        attempts.push(("chroot", libc::syscall(libc::SYS_chroot, target.as_ptr())));
        attempts.push((
            "clone_newuser",
            libc::syscall(libc::SYS_clone, libc::CLONE_NEWUSER | libc::SIGCHLD, 0, 0, 0, 0),
        ));
    }
    for (name, rc) in attempts {
        // A successful clone leaves a child: it exits at once.
        if name == "clone_newuser" && rc == 0 {
            // SAFETY: in the child of a raw clone, exit immediately.
            unsafe { libc::_exit(0) };
        }
        println!("{name}={}", result(rc));
    }
}

/// Capability sets of this process.
fn caps() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for l in status.lines().filter(|l| l.starts_with("Cap")) {
        let (k, v) = l.split_once(':').unwrap_or((l, ""));
        println!("{k}={}", v.trim());
    }
}

/// Privileged file-system and network operations.
fn privileged() {
    let path = CString::new("/tmp/probe-null").unwrap_or_default();
    // SAFETY: valid path pointer; makedev(1, 3) is /dev/null's number.
    let rc = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    println!("mknod={}", result(i64::from(rc)));
    // SAFETY: plain socket(2) call.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    println!("raw_socket={}", result(i64::from(s)));
    // SAFETY: plain socket(2) call.
    let p = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    println!("packet_socket={}", result(i64::from(p)));
}

fn write_path(path: &str, data: &str) {
    let r = std::fs::OpenOptions::new().write(true).open(path).and_then(|mut f| f.write_all(data.as_bytes()));
    println!(
        "write {path}={}",
        r.map(|_| "ok".to_string()).unwrap_or_else(|e| errno_name(e.raw_os_error().unwrap_or(0)))
    );
}

fn read_path(path: &str) {
    let r = std::fs::File::open(path).and_then(|mut f| {
        let mut buf = [0u8; 64];
        std::io::Read::read(&mut f, &mut buf)
    });
    match r {
        Ok(n) => println!("read {path}=ok {n}"),
        Err(e) => println!("read {path}={}", errno_name(e.raw_os_error().unwrap_or(0))),
    }
}

/// Forks sleeping children until the kernel refuses, then holds them for `hold` seconds.
fn forkbomb(hold: u64) {
    let mut children = Vec::new();
    let err = loop {
        // SAFETY: the child only sleeps and exits; no locks are taken after fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            break last_errno();
        }
        if pid == 0 {
            // SAFETY: in the child: sleep then exit without running destructors.
            unsafe {
                libc::sleep(u32::try_from(hold + 5).unwrap_or(60));
                libc::_exit(0);
            }
        }
        children.push(pid);
        if children.len() > 100_000 {
            break 0;
        }
    };
    println!("forked={} stopped_by={}", children.len(), errno_name(err));
    let _ = std::io::stdout().flush();
    std::thread::sleep(std::time::Duration::from_secs(hold));
    for c in children {
        // SAFETY: signalling our own children.
        unsafe { libc::kill(c, libc::SIGKILL) };
    }
}

/// Allocates and touches memory in 16 MiB steps up to `mib`, printing progress.
fn alloc(mib: usize) {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for i in 0..mib.div_ceil(16) {
        blocks.push(vec![1u8; 16 << 20]);
        println!("allocated={}", (i + 1) * 16);
        let _ = std::io::stdout().flush();
    }
    println!("alloc=done");
}

/// Writes zeros to `path` until an error, printing the total and the error.
fn fill(path: &str) {
    let mut f = match std::fs::File::create(path) {
        Ok(f) => f,
        Err(e) => {
            println!("fill={}", errno_name(e.raw_os_error().unwrap_or(0)));
            return;
        }
    };
    let buf = vec![0u8; 1 << 20];
    let mut total: u64 = 0;
    loop {
        match f.write(&buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) => {
                let _ = f.sync_all();
                println!("filled={total} err={}", errno_name(e.raw_os_error().unwrap_or(0)));
                return;
            }
        }
    }
    println!("filled={total} err=none");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "syscalls" => syscalls(),
        "caps" => caps(),
        "privileged" => privileged(),
        "write" => write_path(&arg(1), &arg(2)),
        "read" => read_path(&arg(1)),
        "forkbomb" => forkbomb(arg(1).parse().unwrap_or(5)),
        "alloc" => alloc(arg(1).parse().unwrap_or(64)),
        "fill" => fill(&arg(1)),
        other => {
            eprintln!(
                "usage: sandpit-probe syscalls|caps|privileged|write P D|read P|forkbomb S|alloc MiB|fill P ({other:?})"
            );
            std::process::exit(2);
        }
    }
}
