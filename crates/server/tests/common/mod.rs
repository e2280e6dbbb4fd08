//! A real server (SQLite, local backend with runc, the default busybox image) in a temporary data
//! directory, driven through its router without a socket. Needs root, runc and busybox-static.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use sandpit_server::{App, Server, ServerConfig};
use serde_json::Value;
use tower::ServiceExt;

pub const KEY: &str = "sp_test_0123456789abcdef0123456789abcdef";

pub struct TestServer {
    /// First, so that it runs before the directory is removed.
    pub guard: Cleanup,
    pub dir: tempfile::TempDir,
    pub app: Arc<App>,
    pub router: axum::Router,
}

/// Kills containers and unmounts under a data directory when dropped (a failed test leaves
/// nothing behind), unless disarmed.
pub struct Cleanup(pub Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            cleanup(d);
        }
    }
}

/// A temporary directory others can traverse (sandbox root must reach the rootfs below it).
pub fn data_parent() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("ss").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

pub fn config(data_dir: &Path) -> ServerConfig {
    let mut c = ServerConfig {
        data_dir: data_dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        credentials_file: Some(data_dir.join("credentials.json")),
        sandbox_disk: sandpit_types::ByteSize::mib(256),
        pull_attempts: 2,
        pull_backoff_ms: 50,
        ..Default::default()
    };
    c.limits.memory_default = sandpit_types::ByteSize::mib(256);
    c
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = data_parent();
        let mut c = config(&dir.path().join("data"));
        tweak(&mut c);
        let server = Server::start(c, Some(KEY.to_string())).await.unwrap();
        let app = server.app().clone();
        let router = sandpit_server::http::router(app.clone());
        Self { guard: Cleanup(Some(dir.path().join("data"))), dir, app, router }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub async fn send(&self, req: Request<Body>) -> axum::response::Response {
        self.router.clone().oneshot(req).await.unwrap()
    }

    /// Sends a JSON request with the test key; returns the status and the JSON body (or Null).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_with_key(method, path, body, Some(KEY)).await
    }

    pub async fn call_with_key(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(k) = key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        let req = match body {
            Some(v) => {
                b.header("content-type", "application/json").body(Body::from(serde_json::to_vec(&v).unwrap()))
            }
            None => b.body(Body::empty()),
        }
        .unwrap();
        let resp = self.send(req).await;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, json)
    }

    /// Creates a sandbox and waits until it runs.
    pub async fn create(&self, body: Value) -> Value {
        let (s, v) = self.call("POST", "/v1/sandboxes?wait=true", Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["state"], "running", "{v}");
        v
    }

    /// Runs a shell line; returns the ExecResult JSON.
    pub async fn sh(&self, id: &str, line: &str) -> Value {
        let (s, v) = self
            .call("POST", &format!("/v1/sandboxes/{id}/exec"), Some(serde_json::json!({"shell": line})))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    /// Polls a sandbox until `pred` holds or `timeout` passes; returns the last view.
    pub async fn wait_for(&self, id: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let end = std::time::Instant::now() + timeout;
        loop {
            let (_, v) = self.call("GET", &format!("/v1/sandboxes/{id}"), None).await;
            if pred(&v) || std::time::Instant::now() > end {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops background work and releases the data directory (for a restart in the same test).
    pub async fn stop(self) -> tempfile::TempDir {
        self.app.shutdown.cancel();
        self.app.tasks.close();
        self.app.tasks.wait().await;
        let Self { mut guard, dir, app, router } = self;
        guard.0 = None;
        drop(router);
        // Background tasks are done; this is the last reference.
        assert_eq!(Arc::strong_count(&app), 1, "something still holds the app");
        drop(app);
        dir
    }
}

/// Kills every container and unmounts everything under a data directory.
pub fn cleanup(data: &Path) {
    let runc_root = data.join("runtime/runc");
    if let Ok(entries) = std::fs::read_dir(&runc_root) {
        for e in entries.flatten() {
            let _ = std::process::Command::new("runc")
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

/// Containers the runtime still has under a data directory.
pub fn containers(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("runtime/runc"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Mounts under a data directory.
pub fn mounts(data: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(data))
        .map(String::from)
        .collect()
}
