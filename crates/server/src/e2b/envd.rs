//! The envd plane of one sandbox: `/health`, `/files` (in [`super::files`]) and the Connect
//! services `process.Process` and `filesystem.Filesystem`, each carried out by the sandbox's
//! sandpit-init.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use sandpit_init::protocol::{
    Command, ExecRequest, ExitStatus, FileEntry, FileKind, FsEvent, FsEventKind, ProcSelector, PtySize,
};
use sandpit_runtime::{ExecEvent, ExecSession, InitClient};
use sandpit_store::SandboxRecord;
use sandpit_types::{SandboxId, SandboxState};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;

use super::EnvdSandbox;
use super::connect::{self, Code, RpcError};
use crate::app::App;

/// Exited processes' ends are kept this long by init for a late `Connect`; watchers nobody polls
/// keep at most this many events.
const MAX_WATCH_EVENTS: usize = 10_000;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/health", get(health))
        .route(
            "/files",
            get(super::files::download)
                .post(super::files::upload)
                .layer(tower_http::decompression::RequestDecompressionLayer::new()),
        )
        .route("/process.Process/{method}", post(process))
        .route("/filesystem.Filesystem/{method}", post(filesystem))
        .fallback(|| async {
            RpcError::new(Code::Unimplemented, "envd has no such route in sandpit").into_response()
        })
        .layer(DefaultBodyLimit::disable())
}

/// A running sandbox an envd request may act on.
pub struct Opened {
    /// Its record.
    pub record: SandboxRecord,
    /// Its init.
    pub init: InitClient,
    /// Its access token.
    pub token: String,
}

/// How a request proves it may use the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// None needed (`/health`).
    None,
    /// `X-Access-Token`.
    Token,
    /// `X-Access-Token`, or a signature checked by the caller (`/files`).
    TokenOrSigned,
}

/// Finds the sandbox a request addresses; 502 "was not found" unless it runs, 401 without the
/// proof `proof` asks for. With `TokenOrSigned` a request without the header passes, and the
/// caller checks the signature.
pub async fn open(
    app: &Arc<App>,
    sandbox: &EnvdSandbox,
    headers: &HeaderMap,
    proof: Proof,
) -> Result<Opened, Response> {
    if !app.config.enable_sandbox {
        return Err(crate::error::AppError(sandpit_types::ApiError::FeatureDisabled { feature: "sandbox" })
            .into_response());
    }
    let id_text = sandbox.0.as_str();
    let Ok(id) = id_text.parse::<SandboxId>() else { return Err(super::not_found(id_text)) };
    let record = match app.store.get_sandbox(&id).await {
        Ok(Some(r)) if r.state == SandboxState::Running => r,
        Ok(_) => return Err(super::not_found(id_text)),
        Err(e) => return Err(crate::error::AppError::from(e).into_response()),
    };
    let token = super::access_token(app, &id);
    let given = headers.get("x-access-token").map(|v| v.as_bytes());
    let ok = match (proof, given) {
        (Proof::None, _) | (Proof::TokenOrSigned, None) => true,
        (_, Some(g)) => bool::from(g.ct_eq(token.as_bytes())),
        (Proof::Token, None) => false,
    };
    if !ok {
        return Err((
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"code": "unauthenticated", "message": "missing or wrong X-Access-Token for this sandbox"})),
        )
            .into_response());
    }
    let init = app.init(&record).await.map_err(|_| super::not_found(id_text))?;
    Ok(Opened { record, init, token })
}

/// `GET /health`: 204 while the sandbox runs.
async fn health(State(app): State<Arc<App>>, sandbox: EnvdSandbox, headers: HeaderMap) -> Response {
    match open(&app, &sandbox, &headers, Proof::None).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

/// The user a call acts as when it names none: `user` (E2B's default, home `/home/user`) where
/// the image has that account, else the image's default (root). Looked up once per sandbox.
pub async fn default_user(init: &InitClient, id: SandboxId) -> Option<String> {
    static KNOWN: LazyLock<Mutex<HashMap<SandboxId, bool>>> = LazyLock::new(Mutex::default);
    let known = KNOWN.lock().unwrap_or_else(|p| p.into_inner()).get(&id).copied();
    let has_user = match known {
        Some(k) => k,
        None => {
            let passwd = init.read_to_vec("/etc/passwd").await.unwrap_or_default();
            let has = String::from_utf8_lossy(&passwd).lines().any(|l| l.starts_with("user:"));
            let mut m = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
            if m.len() > 100_000 {
                m.clear();
            }
            m.insert(id, has);
            has
        }
    };
    has_user.then(|| "user".to_string())
}

/// The user of an RPC: its Basic header, or the sandbox's default.
async fn rpc_user(headers: &HeaderMap, o: &Opened) -> Result<Option<String>, RpcError> {
    match connect::basic_user(headers)? {
        Some(u) => Ok(Some(u)),
        None => Ok(default_user(&o.init, o.record.id).await),
    }
}

/// A `uint32` written as a number or a string (both are proto3 JSON).
fn lenient_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("expected a 32-bit unsigned integer")),
        Some(Value::String(s)) => s.parse().map(Some).map_err(serde::de::Error::custom),
        Some(other) => Err(serde::de::Error::custom(format!("expected an integer, got {other}"))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ProcessConfig {
    cmd: String,
    args: Vec<String>,
    envs: BTreeMap<String, String>,
    cwd: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Size {
    #[serde(deserialize_with = "lenient_u32")]
    cols: Option<u32>,
    #[serde(deserialize_with = "lenient_u32")]
    rows: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Pty {
    size: Option<Size>,
}

impl Pty {
    fn size(&self) -> PtySize {
        let s = self.size.as_ref();
        let clamp = |v: Option<u32>, d: u16| v.map_or(d, |v| u16::try_from(v).unwrap_or(u16::MAX).max(1));
        PtySize { cols: clamp(s.and_then(|s| s.cols), 80), rows: clamp(s.and_then(|s| s.rows), 24) }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct StartRequest {
    process: Option<ProcessConfig>,
    pty: Option<Pty>,
    tag: Option<String>,
    stdin: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Selector {
    #[serde(deserialize_with = "lenient_u32")]
    pid: Option<u32>,
    tag: Option<String>,
}

impl Selector {
    fn to_init(&self) -> Result<ProcSelector, RpcError> {
        match (&self.pid, &self.tag) {
            (Some(p), _) => Ok(ProcSelector::Pid(*p)),
            (None, Some(t)) => Ok(ProcSelector::Tag(t.clone())),
            (None, None) => Err(RpcError::invalid("process: give a pid or a tag")),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WithProcess {
    process: Option<Selector>,
    input: Option<ProcessInput>,
    signal: Option<Value>,
    pty: Option<Pty>,
}

impl WithProcess {
    fn selector(&self) -> Result<ProcSelector, RpcError> {
        self.process.as_ref().ok_or_else(|| RpcError::invalid("process is required"))?.to_init()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ProcessInput {
    stdin: Option<String>,
    pty: Option<String>,
}

/// `POST /process.Process/{method}`.
async fn process(
    State(app): State<Arc<App>>,
    Path(method): Path<String>,
    sandbox: EnvdSandbox,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let o = match open(&app, &sandbox, &headers, Proof::Token).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    match method.as_str() {
        "Start" => start(&headers, &body, o).await,
        "Connect" => attach(&headers, &body, o).await,
        "List" => connect::unary(list(&o).await),
        "SendInput" => connect::unary(send_input(&body, &o).await),
        "SendSignal" => connect::unary(send_signal(&body, &o).await),
        "CloseStdin" => connect::unary(close_stdin(&body, &o).await),
        "Update" => connect::unary(update(&body, &o).await),
        other => RpcError::new(Code::Unimplemented, format!("process.Process/{other} is not implemented"))
            .into_response(),
    }
}

async fn start(headers: &HeaderMap, body: &[u8], o: Opened) -> Response {
    let req: StartRequest = match connect::parse_streaming(headers, body) {
        Ok(r) => r,
        Err(e) => return connect::stream_error(e),
    };
    let user = match rpc_user(headers, &o).await {
        Ok(u) => u,
        Err(e) => return connect::stream_error(e),
    };
    let Some(p) = req.process.filter(|p| !p.cmd.is_empty()) else {
        return connect::stream_error(RpcError::invalid("process.cmd is required"));
    };
    let mut argv = vec![p.cmd];
    argv.extend(p.args);
    let exec = ExecRequest {
        command: Some(Command::Argv(argv)),
        env: p.envs,
        cwd: p.cwd.filter(|c| !c.is_empty()),
        user,
        stdin: req.stdin.unwrap_or(false),
        // Like envd: the call's deadline bounds the process; a client that goes away does not.
        timeout_ms: connect::timeout(headers).map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        keep_on_disconnect: true,
        tag: req.tag,
        pty: req.pty.as_ref().map(Pty::size),
    };
    match o.init.exec(exec).await {
        Ok(session) => relay(session, connect::keepalive(headers)),
        Err(e) => connect::stream_error(RpcError::from_runtime(e)),
    }
}

async fn attach(headers: &HeaderMap, body: &[u8], o: Opened) -> Response {
    let req: WithProcess = match connect::parse_streaming(headers, body) {
        Ok(r) => r,
        Err(e) => return connect::stream_error(e),
    };
    let target = match req.selector() {
        Ok(t) => t,
        Err(e) => return connect::stream_error(e),
    };
    match o.init.attach(target, false).await {
        Ok(session) => relay(session, connect::keepalive(headers)),
        Err(e) => connect::stream_error(RpcError::from_runtime(e)),
    }
}

/// Streams a process's events: `start`, output as it comes, `end`; keepalives while quiet.
/// A client that goes away leaves the process running.
fn relay(mut session: ExecSession, keepalive: Duration) -> Response {
    let (tx, resp) = connect::stream();
    let pid = session.pid();
    tokio::spawn(async move {
        if !tx.send(&json!({"event": {"start": {"pid": pid}}})).await {
            return;
        }
        loop {
            let next = tokio::select! {
                ev = session.next() => ev,
                () = tokio::time::sleep(keepalive) => {
                    if tx.send(&json!({"event": {"keepalive": {}}})).await { continue } else { return }
                }
                () = tx.closed() => return,
            };
            let msg = match next {
                Ok(Some(ExecEvent::Stdout(b))) => json!({"event": {"data": {"stdout": b64(&b)}}}),
                Ok(Some(ExecEvent::Stderr(b))) => json!({"event": {"data": {"stderr": b64(&b)}}}),
                Ok(Some(ExecEvent::Pty(b))) => json!({"event": {"data": {"pty": b64(&b)}}}),
                Ok(Some(ExecEvent::Exited(status))) => {
                    let _ = tx.send(&json!({"event": {"end": end_event(&status)}})).await;
                    tx.end(None).await;
                    return;
                }
                Ok(None) => {
                    tx.end(None).await;
                    return;
                }
                Err(e) => {
                    tx.end(Some(RpcError::from_runtime(e))).await;
                    return;
                }
            };
            if !tx.send(&msg).await {
                return;
            }
        }
    });
    resp
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// envd's `EndEvent`, after Go's `ProcessState`: `exit status 3`, or `signal: killed` with
/// exit code -1.
fn end_event(s: &ExitStatus) -> Value {
    match (s.code, s.signal) {
        (Some(code), _) => {
            let status = format!("exit status {code}");
            let mut v = json!({"exitCode": code, "exited": true, "status": status});
            if code != 0 {
                v["error"] = json!(status);
            }
            v
        }
        (None, signal) => {
            let status = format!("signal: {}", signal_name(signal.unwrap_or(libc::SIGKILL)));
            json!({"exitCode": -1, "exited": false, "status": status, "error": status})
        }
    }
}

/// Go's names of the usual signals.
fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGHUP => "hangup".into(),
        libc::SIGINT => "interrupt".into(),
        libc::SIGQUIT => "quit".into(),
        libc::SIGABRT => "aborted".into(),
        libc::SIGKILL => "killed".into(),
        libc::SIGSEGV => "segmentation fault".into(),
        libc::SIGPIPE => "broken pipe".into(),
        libc::SIGALRM => "alarm clock".into(),
        libc::SIGTERM => "terminated".into(),
        n => format!("signal {n}"),
    }
}

async fn list(o: &Opened) -> Result<Value, RpcError> {
    let procs = o.init.list_procs().await.map_err(RpcError::from_runtime)?;
    let processes: Vec<Value> = procs
        .into_iter()
        .filter(|p| p.exit.is_none() && !p.entrypoint)
        .map(|p| {
            let mut argv = p.argv.into_iter();
            let cmd = argv.next().unwrap_or_default();
            let mut info = json!({
                "pid": p.pid,
                "config": {"cmd": cmd, "args": argv.collect::<Vec<_>>(), "envs": p.env, "cwd": p.cwd},
            });
            if let Some(t) = p.tag {
                info["tag"] = json!(t);
            }
            info
        })
        .collect();
    Ok(json!({"processes": processes}))
}

async fn send_input(body: &[u8], o: &Opened) -> Result<Value, RpcError> {
    let req: WithProcess = connect::parse_unary(body)?;
    let target = req.selector()?;
    let input = req.input.unwrap_or_default();
    let Some(data) = input.stdin.or(input.pty) else {
        return Err(RpcError::invalid("input: give stdin or pty"));
    };
    let data = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| RpcError::invalid("input is not base64"))?;
    o.init.write_stdin(target, &data).await.map_err(RpcError::from_runtime)?;
    Ok(json!({}))
}

async fn send_signal(body: &[u8], o: &Opened) -> Result<Value, RpcError> {
    let req: WithProcess = connect::parse_unary(body)?;
    let target = req.selector()?;
    let signal = match &req.signal {
        Some(Value::String(s)) if s == "SIGNAL_SIGKILL" => libc::SIGKILL,
        Some(Value::String(s)) if s == "SIGNAL_SIGTERM" => libc::SIGTERM,
        Some(Value::Number(n)) if n.as_i64() == Some(9) => libc::SIGKILL,
        Some(Value::Number(n)) if n.as_i64() == Some(15) => libc::SIGTERM,
        other => {
            return Err(RpcError::invalid(format!(
                "signal must be SIGNAL_SIGKILL or SIGNAL_SIGTERM, got {}",
                other.as_ref().map_or_else(|| "nothing".to_string(), ToString::to_string)
            )));
        }
    };
    o.init.signal(target, signal, true).await.map_err(RpcError::from_runtime)?;
    Ok(json!({}))
}

async fn close_stdin(body: &[u8], o: &Opened) -> Result<Value, RpcError> {
    let req: WithProcess = connect::parse_unary(body)?;
    o.init.close_stdin(req.selector()?).await.map_err(RpcError::from_runtime)?;
    Ok(json!({}))
}

async fn update(body: &[u8], o: &Opened) -> Result<Value, RpcError> {
    let req: WithProcess = connect::parse_unary(body)?;
    let target = req.selector()?;
    if let Some(pty) = &req.pty {
        o.init.resize_pty(target, pty.size()).await.map_err(RpcError::from_runtime)?;
    }
    Ok(json!({}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct FsRequest {
    path: String,
    source: String,
    destination: String,
    #[serde(deserialize_with = "lenient_u32")]
    depth: Option<u32>,
    recursive: bool,
    watcher_id: String,
}

/// `POST /filesystem.Filesystem/{method}`.
async fn filesystem(
    State(app): State<Arc<App>>,
    Path(method): Path<String>,
    sandbox: EnvdSandbox,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let o = match open(&app, &sandbox, &headers, Proof::Token).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    if method == "WatchDir" {
        return watch_dir(&headers, &body, &o).await;
    }
    let user = match rpc_user(&headers, &o).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let result = async {
        let req: FsRequest = connect::parse_unary(&body)?;
        let rt = RpcError::from_runtime;
        match method.as_str() {
            "Stat" => Ok(json!({"entry": entry_info(&o.init.stat(&req.path, user).await.map_err(rt)?)})),
            "MakeDir" => {
                if o.init.stat(&req.path, user.clone()).await.is_ok() {
                    return Err(RpcError::new(
                        Code::AlreadyExists,
                        format!("path '{}' already exists", req.path),
                    ));
                }
                Ok(json!({"entry": entry_info(&o.init.make_dir(&req.path, user, true).await.map_err(rt)?)}))
            }
            "Move" => {
                let e = o.init.rename(&req.source, &req.destination, user).await.map_err(rt)?;
                Ok(json!({"entry": entry_info(&e)}))
            }
            "ListDir" => {
                let depth = req.depth.unwrap_or(1).max(1);
                let entries = o.init.list_dir(&req.path, user, depth).await.map_err(rt)?;
                Ok(json!({"entries": entries.iter().map(entry_info).collect::<Vec<_>>()}))
            }
            "Remove" => {
                o.init.remove(&req.path, user, true).await.map_err(rt)?;
                Ok(json!({}))
            }
            "CreateWatcher" => create_watcher(&o, &req, user).await,
            "GetWatcherEvents" => watcher_events(&o, &req.watcher_id),
            "RemoveWatcher" => {
                remove_watcher(&o, &req.watcher_id)?;
                Ok(json!({}))
            }
            other => Err(RpcError::new(
                Code::Unimplemented,
                format!("filesystem.Filesystem/{other} is not implemented"),
            )),
        }
    }
    .await;
    connect::unary(result)
}

/// envd's `EntryInfo`.
pub fn entry_info(e: &FileEntry) -> Value {
    let (file_type, type_char) = match e.kind {
        FileKind::Dir => ("FILE_TYPE_DIRECTORY", 'd'),
        FileKind::Symlink => ("FILE_TYPE_SYMLINK", 'L'),
        FileKind::File | FileKind::Other => ("FILE_TYPE_FILE", '-'),
    };
    let mut permissions = String::with_capacity(10);
    permissions.push(type_char);
    for shift in [6u32, 3, 0] {
        let bits = (e.mode >> shift) & 7;
        permissions.push(if bits & 4 != 0 { 'r' } else { '-' });
        permissions.push(if bits & 2 != 0 { 'w' } else { '-' });
        permissions.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    let modified = OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.mtime_ns))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    let mut v = json!({
        "name": e.name,
        "type": file_type,
        "path": e.path,
        "size": e.size.to_string(),
        "mode": e.mode & 0o7777,
        "permissions": permissions,
        "owner": e.owner.clone().unwrap_or_else(|| e.uid.to_string()),
        "group": e.group.clone().unwrap_or_else(|| e.gid.to_string()),
        "modifiedTime": modified,
    });
    if let Some(t) = &e.symlink_target {
        v["symlinkTarget"] = json!(t);
        v["isSymlink"] = json!(true);
    }
    v
}

fn event_type(k: FsEventKind) -> &'static str {
    match k {
        FsEventKind::Create => "EVENT_TYPE_CREATE",
        FsEventKind::Write => "EVENT_TYPE_WRITE",
        FsEventKind::Remove => "EVENT_TYPE_REMOVE",
        FsEventKind::Rename => "EVENT_TYPE_RENAME",
        FsEventKind::Chmod => "EVENT_TYPE_CHMOD",
    }
}

fn fs_event(e: &FsEvent) -> Value {
    json!({"name": e.name, "type": event_type(e.kind)})
}

/// `WatchDir`: `start`, then the changes as they happen, keepalives while quiet.
async fn watch_dir(headers: &HeaderMap, body: &[u8], o: &Opened) -> Response {
    let req: FsRequest = match connect::parse_streaming(headers, body) {
        Ok(r) => r,
        Err(e) => return connect::stream_error(e),
    };
    let user = match rpc_user(headers, o).await {
        Ok(u) => u,
        Err(e) => return connect::stream_error(e),
    };
    let mut watcher = match o.init.watch(&req.path, user, req.recursive).await {
        Ok(w) => w,
        Err(e) => return connect::stream_error(RpcError::from_runtime(e)),
    };
    let keepalive = connect::keepalive(headers);
    let (tx, resp) = connect::stream();
    tokio::spawn(async move {
        if !tx.send(&json!({"start": {}})).await {
            return;
        }
        loop {
            let next = tokio::select! {
                ev = watcher.next() => ev,
                () = tokio::time::sleep(keepalive) => {
                    if tx.send(&json!({"keepalive": {}})).await { continue } else { return }
                }
                () = tx.closed() => return,
            };
            match next {
                Ok(Some(ev)) => {
                    if !tx.send(&json!({"filesystem": fs_event(&ev)})).await {
                        return;
                    }
                }
                Ok(None) => return tx.end(None).await,
                Err(e) => return tx.end(Some(RpcError::from_runtime(e))).await,
            }
        }
    });
    resp
}

/// A polled watcher (`CreateWatcher` … `GetWatcherEvents` … `RemoveWatcher`).
struct PolledWatcher {
    sandbox: SandboxId,
    events: Arc<Mutex<VecDeque<FsEvent>>>,
    task: tokio::task::AbortHandle,
}

static WATCHERS: LazyLock<Mutex<HashMap<String, PolledWatcher>>> = LazyLock::new(Mutex::default);

fn watchers() -> std::sync::MutexGuard<'static, HashMap<String, PolledWatcher>> {
    WATCHERS.lock().unwrap_or_else(|p| p.into_inner())
}

async fn create_watcher(o: &Opened, req: &FsRequest, user: Option<String>) -> Result<Value, RpcError> {
    let mut watcher = o.init.watch(&req.path, user, req.recursive).await.map_err(RpcError::from_runtime)?;
    let events = Arc::new(Mutex::new(VecDeque::new()));
    let sink = Arc::clone(&events);
    let id = uuid::Uuid::now_v7().simple().to_string();
    let task = tokio::spawn(async move {
        while let Ok(Some(ev)) = watcher.next().await {
            let mut q = sink.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() >= MAX_WATCH_EVENTS {
                q.pop_front();
            }
            q.push_back(ev);
        }
    });
    // Watchers of sandboxes that ended are dropped here, as new ones come.
    let mut all = watchers();
    all.retain(|_, w| !w.task.is_finished());
    all.insert(id.clone(), PolledWatcher { sandbox: o.record.id, events, task: task.abort_handle() });
    Ok(json!({"watcherId": id}))
}

fn watcher_events(o: &Opened, id: &str) -> Result<Value, RpcError> {
    let all = watchers();
    let w = all
        .get(id)
        .filter(|w| w.sandbox == o.record.id)
        .ok_or_else(|| RpcError::new(Code::NotFound, format!("watcher {id} not found")))?;
    let drained: Vec<Value> =
        w.events.lock().unwrap_or_else(|p| p.into_inner()).drain(..).map(|e| fs_event(&e)).collect();
    Ok(json!({"events": drained}))
}

fn remove_watcher(o: &Opened, id: &str) -> Result<(), RpcError> {
    let mut all = watchers();
    match all.get(id) {
        Some(w) if w.sandbox == o.record.id => {
            w.task.abort();
            all.remove(id);
            Ok(())
        }
        _ => Err(RpcError::new(Code::NotFound, format!("watcher {id} not found"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_read_like_gos_process_state() {
        let ok = end_event(&ExitStatus { code: Some(0), signal: None, timed_out: false });
        assert_eq!(ok, json!({"exitCode": 0, "exited": true, "status": "exit status 0"}));
        let three = end_event(&ExitStatus { code: Some(3), signal: None, timed_out: false });
        assert_eq!(three["error"], "exit status 3");
        let killed = end_event(&ExitStatus { code: None, signal: Some(9), timed_out: true });
        assert_eq!(
            killed,
            json!({"exitCode": -1, "exited": false, "status": "signal: killed", "error": "signal: killed"})
        );
    }

    #[test]
    fn entries_carry_protojson_types() {
        let e = FileEntry {
            name: "a.txt".into(),
            path: "/home/user/a.txt".into(),
            kind: FileKind::File,
            size: 11,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            owner: Some("user".into()),
            group: None,
            mtime_ns: 1_700_000_000_000_000_000,
            symlink_target: None,
        };
        let v = entry_info(&e);
        assert_eq!(v["type"], "FILE_TYPE_FILE");
        assert_eq!(v["size"], "11");
        assert_eq!(v["mode"], 420);
        assert_eq!(v["permissions"], "-rw-r--r--");
        assert_eq!((v["owner"].as_str(), v["group"].as_str()), (Some("user"), Some("1000")));
        assert_eq!(v["modifiedTime"], "2023-11-14T22:13:20Z");
        let d = entry_info(&FileEntry { kind: FileKind::Dir, mode: 0o755, ..e });
        assert_eq!(
            (d["type"].as_str(), d["permissions"].as_str()),
            (Some("FILE_TYPE_DIRECTORY"), Some("drwxr-xr-x"))
        );
    }
}
