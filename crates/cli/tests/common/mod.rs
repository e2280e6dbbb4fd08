//! The real `sandpit` binary, started as `sandpit serve` on a free port with a temporary data
//! directory and HOME, and run as a user would run the client verbs. Needs root, runc,
//! busybox-static and e2fsprogs.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The key tests bootstrap with.
pub const KEY: &str = "sp_clitest_0123456789abcdef0123456789abcdef";

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sandpit")
}

/// A port nothing listens on (right now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `sandpit` command with no SANDPIT_* variables from the test's own environment.
pub fn sandpit(home: &Path) -> Command {
    let mut c = Command::new(bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SANDPIT_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.env("HOME", home).stdin(Stdio::null());
    c
}

/// Output as text, for messages.
pub fn show(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A running `sandpit serve`.
pub struct Serve {
    pub child: Option<Child>,
    pub port: u16,
    /// Traversable by others (0711), holding `data/`, `home/`, `serve.out`, `serve.err`.
    pub dir: tempfile::TempDir,
}

/// How to start a server.
#[derive(Clone, Debug)]
pub struct Start {
    /// `SANDPIT_BOOTSTRAP_KEY`, if any.
    pub bootstrap_key: Option<String>,
    /// `SANDPIT_FAILPOINT`: the server kills itself with SIGKILL on reaching this point.
    pub failpoint: Option<String>,
    /// `SANDPIT_SIMULATE_GPUS`, if any.
    pub simulate_gpus: Option<String>,
    /// More environment variables for the server.
    pub env: Vec<(String, String)>,
    /// More configuration (TOML) for the server's file, written at the first start.
    pub config: String,
}

impl Default for Start {
    fn default() -> Self {
        Self {
            bootstrap_key: Some(KEY.into()),
            failpoint: None,
            simulate_gpus: None,
            env: Vec::new(),
            config: String::new(),
        }
    }
}

/// A temporary directory others can traverse (sandbox root must reach the rootfs below it).
pub fn traversable_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("sandpit-cli").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

impl Serve {
    /// Starts a server with the bootstrap key [`KEY`] and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(Start::default())
    }

    pub fn start_with(opts: Start) -> Self {
        let dir = traversable_dir();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        // Small sandboxes: tests run many at once.
        std::fs::write(
            dir.path().join("sandpit.toml"),
            format!("sandbox_disk = \"256Mi\"\n[limits]\nmemory_default = \"256Mi\"\n{}", opts.config),
        )
        .unwrap();
        let mut s = Self { child: None, port: free_port(), dir };
        s.spawn(&opts);
        s.wait_healthy();
        s
    }

    fn spawn(&mut self, opts: &Start) {
        let out = File::options().create(true).append(true).open(self.path("serve.out")).unwrap();
        let err = File::options().create(true).append(true).open(self.path("serve.err")).unwrap();
        let mut c = sandpit(&self.home());
        c.args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--config")
            .arg(self.path("sandpit.toml"))
            .stdout(out)
            .stderr(err);
        if let Some(k) = &opts.bootstrap_key {
            c.env("SANDPIT_BOOTSTRAP_KEY", k);
        }
        match &opts.failpoint {
            Some(f) => c.env("SANDPIT_FAILPOINT", f),
            None => c.env_remove("SANDPIT_FAILPOINT"),
        };
        match &opts.simulate_gpus {
            Some(g) => c.env("SANDPIT_SIMULATE_GPUS", g),
            None => c.env_remove("SANDPIT_SIMULATE_GPUS"),
        };
        c.envs(opts.env.iter().map(|(k, v)| (k, v)));
        self.child = Some(c.spawn().unwrap());
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn home(&self) -> PathBuf {
        self.path("home")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path("data")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What `serve` wrote on stdout (all starts of this directory).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.path("serve.out")).unwrap_or_default()
    }

    /// What `serve` wrote on stderr (its log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("serve.err")).unwrap_or_default()
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sandpit serve exited with {status} before answering\n{}", self.log());
            }
            if healthz(self.port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sandpit serve did not answer /healthz in 60 s\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `sandpit ARGS` with HOME set to the server's (so it reads the credentials file).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// `sandpit ARGS`, not yet run.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = sandpit(&self.home());
        c.args(args);
        c
    }

    /// Runs `sandpit ARGS`, asserts success, and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(o.status.success(), "sandpit {args:?} failed\n{}", show(&o));
        stdout(&o)
    }

    /// Runs `sandpit --json ARGS`, asserts success, and parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("sandpit {args:?}: not JSON ({e}): {out}"))
    }

    /// `create --wait --json ARGS`: a running sandbox's id.
    pub fn create_running(&self, args: &[&str]) -> String {
        let mut all = vec!["create", "--wait"];
        all.extend_from_slice(args);
        let v = self.json(&all);
        assert_eq!(v["state"], "running", "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// Polls `get --json ID` until `done` holds.
    pub fn wait_for(&self, id: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.json(&["get", id]);
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "sandbox {id} did not get there in {timeout:?}: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Deletes every sandbox that has not ended.
    pub fn delete_live_sandboxes(&self) {
        let o = self.cli(&["--json", "list", "--all"]);
        let Ok(list) = serde_json::from_slice::<Value>(&o.stdout) else { return };
        for v in list.as_array().into_iter().flatten() {
            if !matches!(v["state"].as_str(), Some("terminated" | "failed")) {
                let _ = self.cli(&["delete", v["id"].as_str().unwrap_or_default()]);
            }
        }
    }

    /// Sends SIGTERM and waits; returns the exit status and how long the server took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("server not running");
        let started = Instant::now();
        signal(&child, rustix::process::Signal::TERM);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(30) {
                signal(&child, rustix::process::Signal::KILL);
                let status = child.wait().unwrap();
                return (status, started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Deletes what is left, stops the server, and checks it exited 0 leaving no container.
    pub fn stop(mut self) {
        self.delete_live_sandboxes();
        let (status, took) = self.terminate();
        assert!(status.success(), "sandpit serve exited with {status}\n{}", self.log());
        assert!(took < Duration::from_secs(10), "sandpit serve took {took:?} to stop");
        assert!(
            containers(&self.data_dir()).is_empty(),
            "containers left: {:?}",
            containers(&self.data_dir())
        );
    }

    /// Kills the server with SIGKILL (a crash at an arbitrary moment) and reaps it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("server not running");
        signal(&child, rustix::process::Signal::KILL);
        let _ = child.wait();
    }

    /// Waits (up to `timeout`) for the server to die by SIGKILL at its failpoint.
    pub fn expect_killed(&mut self, timeout: Duration) {
        use std::os::unix::process::ExitStatusExt;
        let mut child = self.child.take().expect("server not running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert_eq!(
                    status.signal(),
                    Some(9),
                    "serve ended with {status}, not at its failpoint\n{}",
                    self.log()
                );
                return;
            }
            if Instant::now() > deadline {
                signal(&child, rustix::process::Signal::KILL);
                let _ = child.wait();
                panic!("serve did not reach its failpoint in {timeout:?}\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again without waiting for it to answer (it may die at a failpoint
    /// first).
    pub fn respawn(&mut self, opts: Start) {
        assert!(self.child.is_none(), "server still running");
        self.spawn(&opts);
    }

    /// Starts the server again over the same directory and port.
    pub fn restart(&mut self, opts: Start) {
        if self.child.is_some() {
            let (status, _) = self.terminate();
            assert!(status.success(), "sandpit serve exited with {status}\n{}", self.log());
        }
        self.spawn(&opts);
        self.wait_healthy();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.delete_live_sandboxes();
            let _ = self.terminate();
        }
        force_cleanup(&self.data_dir());
    }
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let _ = rustix::process::kill_process(rustix::process::Pid::from_child(child), sig);
}

/// Whether `GET /healthz` answers 200 on `port`.
pub fn healthz(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return false;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200")
}

/// Containers the runtime still has under a data directory.
pub fn containers(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("runtime/runc"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Kills containers and unmounts under a data directory (a failed test leaves nothing behind).
fn force_cleanup(data: &Path) {
    let runc_root = data.join("runtime/runc");
    if let Ok(entries) = std::fs::read_dir(&runc_root) {
        for e in entries.flatten() {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force"])
                .arg(e.file_name())
                .output();
        }
    }
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(data))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in mounts {
        let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
    }
}

/// `n` bytes of deterministic noise (xorshift), so that a copy that drops or reorders a chunk
/// is caught.
pub fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}
