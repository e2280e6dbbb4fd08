//! [`Client`]: one method per route of the native API (`/v1`), returning its typed views.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStream, TryStreamExt};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, Url};
use sandpit_types::accounts::{
    CreateKey, CreateProject, CreateUser, CreatedKey, CreatedUser, CreditWallet, EstimateRequest,
    EstimateView, KeyView, KycView, LedgerLineView, MeView, MemberView, SetKyc, SetMember, UpdateWallet,
    UsageQuery, UsageView, UserView, WalletView,
};
use sandpit_types::api::{
    CreateSandbox, ExecRequest, ExecResult, ExecStreamEvent, FileEntryView, GpuTypeView, Health, ImagesView,
    LogEntry, LogsPage, MakeDir, MovePath, Page, ProcessInput, ProcessView, ProjectView, PruneReport,
    PullEvent, PullImage, SandboxEventView, SandboxView, SetTimeout, SignalProcess,
};
use sandpit_types::{ErrorBody, SandboxState};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::error::{ClientError, Result};
use crate::stream::{ndjson, sse_events, sse_logs};

/// How long to wait for a TCP connection before saying there is no server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream of items the server sends as they happen.
pub type ApiStream<T> = BoxStream<'static, Result<T>>;

/// Filters and paging of `GET /v1/sandboxes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this project.
    pub project: Option<String>,
    /// Only these states (any of them).
    pub states: Vec<SandboxState>,
    /// Only sandboxes with all of these labels.
    pub metadata: Vec<(String, String)>,
    /// Page size (the server's default when absent).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListFilter {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(p) = &self.project {
            q.push(("project", p.clone()));
        }
        if !self.states.is_empty() {
            q.push(("state", self.states.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")));
        }
        if !self.metadata.is_empty() {
            q.push((
                "metadata",
                self.metadata.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(","),
            ));
        }
        if let Some(l) = self.limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(c) = &self.cursor {
            q.push(("cursor", c.clone()));
        }
        q
    }
}

/// Paging of `GET /v1/projects/{project}/wallet/ledger`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerPage {
    /// Only lines with an id above this (the last id of the previous page).
    pub after_id: Option<i64>,
    /// Page size (the server's default, 100, when absent; at most 1000).
    pub limit: Option<u32>,
}

impl LedgerPage {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(a) = self.after_id {
            q.push(("after_id", a.to_string()));
        }
        if let Some(l) = self.limit {
            q.push(("limit", l.to_string()));
        }
        q
    }
}

/// The query of `GET /v1/billing/usage` in `format` (`json` or `csv`), whatever `q.format` says.
fn usage_query(q: &UsageQuery, format: &'static str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (k, v) in [("from", &q.from), ("to", &q.to), ("project", &q.project)] {
        if let Some(v) = v {
            out.push((k, v.clone()));
        }
    }
    out.push(("format", format.to_string()));
    out
}

/// A typed client of one sandpit server, authenticated with one API key. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    /// The base URL as given (for messages).
    shown: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.shown).finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the server at `base_url` (`http://127.0.0.1:7700`) using `api_key`.
    /// Only plain HTTP is supported.
    pub fn new(base_url: &str, api_key: &str) -> Result<Self> {
        let invalid =
            |reason: &str| ClientError::InvalidUrl { url: base_url.to_string(), reason: reason.to_string() };
        let base = Url::parse(base_url.trim()).map_err(|e| invalid(&e.to_string()))?;
        match base.scheme() {
            "http" => {}
            "https" => return Err(invalid("https is not supported by this build; use http://")),
            _ => return Err(invalid("use an http:// URL")),
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(invalid("it has no host"));
        }
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {api_key}")).map_err(|_| ClientError::InvalidKey)?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("sandpit-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .map_err(ClientError::Transport)?;
        let shown = base.as_str().trim_end_matches('/').to_string();
        Ok(Self { http, base, shown })
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.shown
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn sandbox_url(&self, id: &str, rest: &[&str]) -> Url {
        let mut segments = vec!["v1", "sandboxes", id];
        segments.extend_from_slice(rest);
        self.url(&segments)
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http.request(method, url)
    }

    /// Sends a request; maps transport failures and error statuses.
    async fn send(&self, req: RequestBuilder) -> Result<Response> {
        let resp = req.send().await.map_err(|e| ClientError::transport(&self.shown, e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(error_from(resp).await)
    }

    async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        let resp = self.send(req).await?;
        let bytes = resp.bytes().await.map_err(|e| ClientError::transport(&self.shown, e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET /healthz`: whether the server is up, and its version.
    pub async fn health(&self) -> Result<Health> {
        self.json(self.request(Method::GET, self.url(&["healthz"]))).await
    }

    /// `GET /v1/projects`: the projects the key can see.
    pub async fn projects(&self) -> Result<Vec<ProjectView>> {
        self.json(self.request(Method::GET, self.url(&["v1", "projects"]))).await
    }

    /// `GET /v1/me`: the key's user, their projects and the key itself.
    pub async fn me(&self) -> Result<MeView> {
        self.json(self.request(Method::GET, self.url(&["v1", "me"]))).await
    }

    /// `GET /v1/users`: every user, by name (administrators).
    pub async fn users(&self) -> Result<Vec<UserView>> {
        self.json(self.request(Method::GET, self.url(&["v1", "users"]))).await
    }

    /// `POST /v1/users`: creates a user with a first API key, which only this answer holds
    /// (administrators).
    pub async fn create_user(&self, req: &CreateUser) -> Result<CreatedUser> {
        self.json(self.request(Method::POST, self.url(&["v1", "users"])).json(req)).await
    }

    /// `PUT /v1/users/{user}/kyc`: sets a user's verification status (`unverified`, `pending`,
    /// `verified`, `rejected`; administrators).
    pub async fn set_kyc(&self, user: &str, status: &str) -> Result<KycView> {
        let body = SetKyc { status: status.to_string() };
        self.json(self.request(Method::PUT, self.url(&["v1", "users", user, "kyc"])).json(&body)).await
    }

    /// `GET /v1/kyc`: the caller's identity verification.
    pub async fn kyc(&self) -> Result<KycView> {
        self.json(self.request(Method::GET, self.url(&["v1", "kyc"]))).await
    }

    /// `POST /v1/kyc`: starts the caller's identity verification (`pending`, with a reference
    /// and, when the server has a provider, where to complete it).
    pub async fn start_kyc(&self) -> Result<KycView> {
        self.json(self.request(Method::POST, self.url(&["v1", "kyc"]))).await
    }

    /// `POST /v1/projects`: creates a project, owned by the caller, with an empty wallet.
    pub async fn create_project(&self, name: &str) -> Result<ProjectView> {
        let body = CreateProject { name: name.to_string() };
        self.json(self.request(Method::POST, self.url(&["v1", "projects"])).json(&body)).await
    }

    /// `GET /v1/projects/{project}`: one project, with the caller's role there.
    pub async fn project(&self, project: &str) -> Result<ProjectView> {
        self.json(self.request(Method::GET, self.url(&["v1", "projects", project]))).await
    }

    /// `GET /v1/projects/{project}/members`: its members, by name.
    pub async fn members(&self, project: &str) -> Result<Vec<MemberView>> {
        self.json(self.request(Method::GET, self.url(&["v1", "projects", project, "members"]))).await
    }

    /// `PUT /v1/projects/{project}/members/{user}`: adds a member or changes their role
    /// (`owner` or `member`; owners and administrators).
    pub async fn set_member(&self, project: &str, user: &str, role: &str) -> Result<MemberView> {
        let body = SetMember { role: role.to_string() };
        let url = self.url(&["v1", "projects", project, "members", user]);
        self.json(self.request(Method::PUT, url).json(&body)).await
    }

    /// `DELETE /v1/projects/{project}/members/{user}`: removes a member (owners and
    /// administrators; anyone may remove themselves). Succeeds for a user who was not a member.
    pub async fn remove_member(&self, project: &str, user: &str) -> Result<()> {
        let url = self.url(&["v1", "projects", project, "members", user]);
        self.send(self.request(Method::DELETE, url)).await.map(drop)
    }

    /// `GET /v1/keys`: the caller's keys, newest first, revoked ones included; with `all`,
    /// every user's (administrators).
    pub async fn keys(&self, all: bool) -> Result<Vec<KeyView>> {
        let mut r = self.request(Method::GET, self.url(&["v1", "keys"]));
        if all {
            r = r.query(&[("all", "true")]);
        }
        self.json(r).await
    }

    /// `POST /v1/keys`: creates an API key, which only this answer holds.
    pub async fn create_key(&self, req: &CreateKey) -> Result<CreatedKey> {
        self.json(self.request(Method::POST, self.url(&["v1", "keys"])).json(req)).await
    }

    /// `DELETE /v1/keys/{id}`: revokes a key (its owner or an administrator; idempotent).
    pub async fn revoke_key(&self, id: i64) -> Result<()> {
        let id = id.to_string();
        self.send(self.request(Method::DELETE, self.url(&["v1", "keys", &id]))).await.map(drop)
    }

    /// `GET /v1/projects/{project}/wallet`: balance, low-balance threshold and burn rate.
    pub async fn wallet(&self, project: &str) -> Result<WalletView> {
        self.json(self.request(Method::GET, self.url(&["v1", "projects", project, "wallet"]))).await
    }

    /// `PATCH /v1/projects/{project}/wallet`: sets the low-balance threshold, a decimal
    /// (owners and administrators).
    pub async fn set_low_threshold(&self, project: &str, low_threshold: &str) -> Result<WalletView> {
        let body = UpdateWallet { low_threshold: low_threshold.to_string() };
        let url = self.url(&["v1", "projects", project, "wallet"]);
        self.json(self.request(Method::PATCH, url).json(&body)).await
    }

    /// `POST /v1/projects/{project}/wallet/credit`: adds money (administrators).
    pub async fn credit_wallet(&self, project: &str, req: &CreditWallet) -> Result<WalletView> {
        let url = self.url(&["v1", "projects", project, "wallet", "credit"]);
        self.json(self.request(Method::POST, url).json(req)).await
    }

    /// `GET /v1/projects/{project}/wallet/ledger`: one page of credits and charges, oldest first.
    pub async fn ledger(&self, project: &str, page: &LedgerPage) -> Result<Vec<LedgerLineView>> {
        let url = self.url(&["v1", "projects", project, "wallet", "ledger"]);
        self.json(self.request(Method::GET, url).query(&page.query())).await
    }

    /// `POST /v1/estimate`: what a sandbox of this size costs per hour, running and paused.
    pub async fn estimate(&self, req: &EstimateRequest) -> Result<EstimateView> {
        self.json(self.request(Method::POST, self.url(&["v1", "estimate"])).json(req)).await
    }

    /// `GET /v1/billing/usage`: spending in a range by resource, sandbox, project and day
    /// (`q.format` is ignored: see [`Client::usage_csv`]).
    pub async fn usage(&self, q: &UsageQuery) -> Result<UsageView> {
        let r =
            self.request(Method::GET, self.url(&["v1", "billing", "usage"])).query(&usage_query(q, "json"));
        self.json(r).await
    }

    /// `GET /v1/billing/usage?format=csv`: every charge line of the range as CSV (with its header
    /// `id,project,sandbox,resource,seconds,period_from,period_to,amount,currency`).
    pub async fn usage_csv(&self, q: &UsageQuery) -> Result<String> {
        let r = self
            .request(Method::GET, self.url(&["v1", "billing", "usage"]))
            .query(&usage_query(q, "csv"))
            .header(ACCEPT, "text/csv");
        let resp = self.send(r).await?;
        let bytes = resp.bytes().await.map_err(|e| ClientError::transport(&self.shown, e))?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| ClientError::Decode(format!("the CSV is not UTF-8: {e}")))
    }

    /// `GET /v1/images`: the curated catalog and the server's image store.
    pub async fn images(&self) -> Result<ImagesView> {
        self.json(self.request(Method::GET, self.url(&["v1", "images"]))).await
    }

    /// `POST /v1/images/pull`, streamed: progress events, then `done` or `error`.
    pub async fn pull_image(&self, req: &PullImage) -> Result<ApiStream<PullEvent>> {
        let r = self
            .request(Method::POST, self.url(&["v1", "images", "pull"]))
            .header(ACCEPT, "application/x-ndjson")
            .json(req);
        let resp = self.send(r).await?;
        Ok(ndjson(resp, self.shown.clone()))
    }

    /// `DELETE /v1/images?reference=`.
    pub async fn remove_image(&self, reference: &str) -> Result<()> {
        let r = self.request(Method::DELETE, self.url(&["v1", "images"])).query(&[("reference", reference)]);
        self.send(r).await.map(|_| ())
    }

    /// `POST /v1/images/prune`.
    pub async fn prune_images(&self) -> Result<PruneReport> {
        self.json(self.request(Method::POST, self.url(&["v1", "images", "prune"]))).await
    }

    /// `GET /v1/gpus`: GPU types and what is free of each.
    pub async fn gpus(&self) -> Result<Vec<GpuTypeView>> {
        self.json(self.request(Method::GET, self.url(&["v1", "gpus"]))).await
    }

    /// `POST /v1/sandboxes`: creates a sandbox. With `wait`, the answer comes once it is running
    /// or failed; otherwise at once, usually `provisioning`.
    pub async fn create(&self, req: &CreateSandbox, wait: bool) -> Result<SandboxView> {
        let mut r = self.request(Method::POST, self.url(&["v1", "sandboxes"])).json(req);
        if wait {
            r = r.query(&[("wait", "true")]);
        }
        self.json(r).await
    }

    /// `GET /v1/sandboxes`: one page of sandboxes, newest first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Page<SandboxView>> {
        self.json(self.request(Method::GET, self.url(&["v1", "sandboxes"])).query(&filter.query())).await
    }

    /// Every sandbox matching `filter`, following the pages' cursors.
    pub async fn list_all(&self, filter: &ListFilter) -> Result<Vec<SandboxView>> {
        let mut filter = filter.clone();
        let mut all = Vec::new();
        loop {
            let page = self.list(&filter).await?;
            all.extend(page.items);
            match page.next_cursor {
                Some(c) if filter.cursor.as_deref() != Some(c.as_str()) => filter.cursor = Some(c),
                _ => return Ok(all),
            }
        }
    }

    /// `GET /v1/sandboxes/{id}`: one sandbox, by id or name.
    pub async fn get(&self, id: &str) -> Result<SandboxView> {
        self.json(self.request(Method::GET, self.sandbox_url(id, &[]))).await
    }

    /// `DELETE /v1/sandboxes/{id}`: ends and removes a sandbox (succeeds for one already ended).
    pub async fn delete(&self, id: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, self.sandbox_url(id, &[]))).await.map(drop)
    }

    /// `POST …/pause`: stops its processes and releases its resources; its disk is kept.
    pub async fn pause(&self, id: &str) -> Result<SandboxView> {
        self.json(self.request(Method::POST, self.sandbox_url(id, &["pause"]))).await
    }

    /// `POST …/resume`: runs a paused sandbox again over the same disk.
    pub async fn resume(&self, id: &str) -> Result<SandboxView> {
        self.json(self.request(Method::POST, self.sandbox_url(id, &["resume"]))).await
    }

    /// `POST …/timeout`: the sandbox ends after `timeout` more running time.
    pub async fn set_timeout(&self, id: &str, timeout: Duration) -> Result<SandboxView> {
        let body = SetTimeout { timeout_s: timeout.as_secs() };
        self.json(self.request(Method::POST, self.sandbox_url(id, &["timeout"])).json(&body)).await
    }

    /// `POST …/exec`: runs a command to its end and returns its collected output.
    pub async fn exec(&self, id: &str, req: &ExecRequest) -> Result<ExecResult> {
        self.json(self.request(Method::POST, self.sandbox_url(id, &["exec"])).json(req)).await
    }

    /// `POST …/exec` streamed: the command's events as it produces output (`started`, then
    /// `stdout`/`stderr`, then `exited` or `error`). Dropping the stream ends the command.
    pub async fn exec_stream(&self, id: &str, req: &ExecRequest) -> Result<ApiStream<ExecStreamEvent>> {
        let r = self
            .request(Method::POST, self.sandbox_url(id, &["exec"]))
            .header(ACCEPT, "application/x-ndjson")
            .json(req);
        let resp = self.send(r).await?;
        Ok(ndjson(resp, self.shown.clone()))
    }

    /// `GET …/processes`: the sandbox's processes (exec's, running or recently exited, and its
    /// workload).
    pub async fn processes(&self, id: &str) -> Result<Vec<ProcessView>> {
        self.json(self.request(Method::GET, self.sandbox_url(id, &["processes"]))).await
    }

    /// `POST …/processes/{pid}/signal`: signals a process and its group (`TERM`, `KILL`, …).
    pub async fn signal_process(&self, id: &str, pid: u32, signal: &str) -> Result<()> {
        let pid = pid.to_string();
        let body = SignalProcess { signal: signal.to_string() };
        let r = self.request(Method::POST, self.sandbox_url(id, &["processes", &pid, "signal"])).json(&body);
        self.send(r).await.map(drop)
    }

    /// `POST …/processes/{pid}/stdin`: writes to a process's standard input; `close` closes it.
    pub async fn write_process_stdin(&self, id: &str, pid: u32, data: &[u8], close: bool) -> Result<()> {
        use base64::Engine as _;
        let pid = pid.to_string();
        let body = ProcessInput {
            data: None,
            data_base64: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            close,
        };
        let r = self.request(Method::POST, self.sandbox_url(id, &["processes", &pid, "stdin"])).json(&body);
        self.send(r).await.map(drop)
    }

    /// `GET …/processes/{pid}/output` streamed: a process's output (what init still holds, then
    /// new) until it exits. Dropping the stream leaves the process running.
    pub async fn process_output(&self, id: &str, pid: u32) -> Result<ApiStream<ExecStreamEvent>> {
        let pid = pid.to_string();
        let r = self
            .request(Method::GET, self.sandbox_url(id, &["processes", &pid, "output"]))
            .header(ACCEPT, "application/x-ndjson");
        let resp = self.send(r).await?;
        Ok(ndjson(resp, self.shown.clone()))
    }

    /// `GET …/files`: the entries under a directory, `depth` levels deep (default 1).
    pub async fn list_files(&self, id: &str, path: &str, depth: Option<u32>) -> Result<Vec<FileEntryView>> {
        let mut r = self.request(Method::GET, self.sandbox_url(id, &["files"])).query(&[("path", path)]);
        if let Some(d) = depth {
            r = r.query(&[("depth", d)]);
        }
        self.json(r).await
    }

    /// `GET …/files/stat`: one entry (a final symlink is not followed).
    pub async fn stat(&self, id: &str, path: &str) -> Result<FileEntryView> {
        self.json(
            self.request(Method::GET, self.sandbox_url(id, &["files", "stat"])).query(&[("path", path)]),
        )
        .await
    }

    /// `DELETE …/files`: removes a file, or a directory (with its content when `recursive`).
    pub async fn remove_path(&self, id: &str, path: &str, recursive: bool) -> Result<()> {
        let r = self
            .request(Method::DELETE, self.sandbox_url(id, &["files"]))
            .query(&[("path", path), ("recursive", if recursive { "true" } else { "false" })]);
        self.send(r).await.map(drop)
    }

    /// `POST …/files/mkdir`: creates a directory with its parents.
    pub async fn mkdir(&self, id: &str, path: &str) -> Result<FileEntryView> {
        let body = MakeDir { path: path.to_string() };
        self.json(self.request(Method::POST, self.sandbox_url(id, &["files", "mkdir"])).json(&body)).await
    }

    /// `POST …/files/move`: renames a path.
    pub async fn move_path(&self, id: &str, from: &str, to: &str) -> Result<FileEntryView> {
        let body = MovePath { from: from.to_string(), to: to.to_string() };
        self.json(self.request(Method::POST, self.sandbox_url(id, &["files", "move"])).json(&body)).await
    }

    /// `GET …/files/content`: a file's bytes as they arrive, with its size when the server
    /// announced it.
    pub async fn download_stream(&self, id: &str, path: &str) -> Result<(Option<u64>, ApiStream<Bytes>)> {
        let r =
            self.request(Method::GET, self.sandbox_url(id, &["files", "content"])).query(&[("path", path)]);
        let resp = self.send(r).await?;
        let len = resp.content_length();
        let shown = self.shown.clone();
        Ok((len, resp.bytes_stream().map_err(move |e| ClientError::transport(&shown, e)).boxed()))
    }

    /// `GET …/files/content` into `out`, chunk by chunk (memory stays bounded whatever the
    /// size). Returns the number of bytes written; `out` is flushed.
    pub async fn download<W: AsyncWrite + Unpin>(&self, id: &str, path: &str, out: &mut W) -> Result<u64> {
        let (expected, mut chunks) = self.download_stream(id, path).await?;
        let mut n = 0u64;
        while let Some(chunk) = chunks.try_next().await? {
            out.write_all(&chunk).await.map_err(ClientError::Io)?;
            n += chunk.len() as u64;
        }
        out.flush().await.map_err(ClientError::Io)?;
        if let Some(e) = expected
            && e != n
        {
            return Err(ClientError::Decode(format!("download ended after {n} of {e} bytes")));
        }
        Ok(n)
    }

    /// `PUT …/files/content` from a stream of byte chunks: creates or atomically replaces the
    /// file (and its parent directories). `mode` is the new file's permission bits.
    pub async fn upload_stream<S>(
        &self,
        id: &str,
        path: &str,
        body: S,
        mode: Option<u32>,
    ) -> Result<FileEntryView>
    where
        S: TryStream + Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        Bytes: From<S::Ok>,
    {
        let mut r = self
            .request(Method::PUT, self.sandbox_url(id, &["files", "content"]))
            .query(&[("path", path)])
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        if let Some(m) = mode {
            r = r.query(&[("mode", format!("{m:o}"))]);
        }
        self.json(r).await
    }

    /// `PUT …/files/content` from any reader, streamed (memory stays bounded whatever the size).
    pub async fn upload<R>(&self, id: &str, path: &str, reader: R, mode: Option<u32>) -> Result<FileEntryView>
    where
        R: AsyncRead + Send + 'static,
    {
        self.upload_stream(id, path, tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10), mode)
            .await
    }

    /// `GET …/logs`: a page of the workload's log from byte `offset` (0: the start).
    pub async fn logs(&self, id: &str, offset: u64, limit_bytes: Option<usize>) -> Result<LogsPage> {
        let mut r = self.request(Method::GET, self.sandbox_url(id, &["logs"])).query(&[("offset", offset)]);
        if let Some(l) = limit_bytes {
            r = r.query(&[("limit_bytes", l)]);
        }
        self.json(r).await
    }

    /// `GET …/logs?follow=true`: log entries from `offset` as they are written; the stream ends
    /// when the sandbox has ended and its whole log was sent.
    pub async fn follow_logs(&self, id: &str, offset: u64) -> Result<ApiStream<LogEntry>> {
        let r = self
            .request(Method::GET, self.sandbox_url(id, &["logs"]))
            .query(&[("offset", offset.to_string()), ("follow", "true".to_string())])
            .header(ACCEPT, "text/event-stream");
        let resp = self.send(r).await?;
        Ok(sse_logs(resp, self.shown.clone()))
    }

    /// `GET …/events`: state changes and progress after sequence number `after` (0: the whole
    /// history), then live ones; the stream ends after a final state.
    pub async fn events(&self, id: &str, after: u64) -> Result<ApiStream<SandboxEventView>> {
        let r = self
            .request(Method::GET, self.sandbox_url(id, &["events"]))
            .query(&[("after", after)])
            .header(ACCEPT, "text/event-stream");
        let resp = self.send(r).await?;
        Ok(sse_events(resp, self.shown.clone()))
    }
}

/// The error of a response with an error status: the API's `ErrorBody`, or a stand-in when the
/// body is something else (a proxy's page).
async fn error_from(resp: Response) -> ClientError {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap_or_default();
    let body = serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|_| {
        let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
        let reason = status.canonical_reason().unwrap_or("error");
        ErrorBody {
            code: format!("http_{}", status.as_u16()),
            message: if text.trim().is_empty() {
                format!("HTTP {} {reason}", status.as_u16())
            } else {
                format!("HTTP {} {reason}: {}", status.as_u16(), text.trim())
            },
            field: None,
            state: None,
        }
    });
    ClientError::Api { status: status.as_u16(), body }
}
