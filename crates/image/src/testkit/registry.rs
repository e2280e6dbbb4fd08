//! Real registries on loopback for tests: `docker-registry` (distribution 2.8, Debian package
//! `docker-registry`) without auth, with htpasswd basic auth, or with bearer tokens from a small
//! token service run here; a request-counting proxy to put in front; pushes with skopeo.
//!
//! ```text
//!  test ──► CountingProxy (127.0.0.1:P, counts requests) ──► Registry (docker-registry serve)
//!   │                                                          │ auth: none | htpasswd | token
//!   └──────────────────── token requests ──► TokenServer ◄─────┘ (trusts its certificate)
//! ```
//!
//! Every piece runs on its own threads (no async runtime needed) and stops when dropped. Pulls
//! must list the registry (or the proxy) as insecure: they are plain HTTP.
//!
//! ```no_run
//! use sandpit_image::testkit::registry::{Auth, CountingProxy, Registry, TokenServer};
//! use sandpit_image::testkit::build_busybox_image;
//! # fn main() -> Result<(), sandpit_image::testkit::TestkitError> {
//! let work = tempfile::tempdir().unwrap();
//! let image = build_busybox_image(work.path(), "latest")?;
//!
//! // Anonymous.
//! let open = Registry::start(Auth::None)?;
//! open.push(&image.layout, "latest", "tests/busybox:1", None)?;
//! let reference = open.reference("tests/busybox:1"); // "127.0.0.1:PORT/tests/busybox:1"
//!
//! // Basic auth: pushes use the htpasswd user.
//! let basic = Registry::start(Auth::htpasswd("alice", "secret"))?;
//! basic.push(&image.layout, "latest", "private/busybox:1", None)?;
//!
//! // Bearer tokens: bob may do anything; anyone may pull public/busybox.
//! let tokens = TokenServer::start(&[("bob", "pw")], &["public/busybox"])?;
//! let private = Registry::start(Auth::Token(tokens.auth()))?;
//! private.push(&image.layout, "latest", "private/busybox:1", Some(("bob", "pw")))?;
//!
//! // Count requests: pull from proxy.addr() instead of open.addr().
//! let proxy = CountingProxy::start(open.addr())?;
//! assert_eq!(proxy.blob_gets(), 0);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::{OciLayout, TestkitError, run};

/// How long a registry or server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest a [`CountingProxy`] holds a request back (a test that never releases it fails
/// slowly instead of hanging).
const HOLD_TIMEOUT: Duration = Duration::from_secs(60);

/// How a test registry authenticates pulls and pushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Anyone may pull and push.
    None,
    /// HTTP basic auth against one user (an htpasswd file made with `htpasswd -Bbn`).
    Htpasswd {
        /// The user.
        user: String,
        /// Its password.
        password: String,
    },
    /// Bearer tokens from a token service ([`TokenServer::auth`]).
    Token(TokenAuth),
}

impl Auth {
    /// [`Auth::Htpasswd`] from string slices.
    pub fn htpasswd(user: &str, password: &str) -> Self {
        Self::Htpasswd { user: user.to_owned(), password: password.to_owned() }
    }
}

/// The registry side of token auth: where to send clients and whom to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAuth {
    /// The token endpoint (`http://127.0.0.1:P/token`).
    pub realm: String,
    /// The service name tokens are issued for (their audience).
    pub service: String,
    /// The issuer tokens name.
    pub issuer: String,
    /// A PEM file with the certificate that signs tokens.
    pub root_cert_bundle: PathBuf,
}

/// A `docker-registry serve` process with its storage in a temporary directory; killed on drop.
#[derive(Debug)]
pub struct Registry {
    addr: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    credentials: Option<(String, String)>,
}

impl Registry {
    /// Starts a registry on a free loopback port and waits until it answers.
    pub fn start(auth: Auth) -> Result<Self, TestkitError> {
        let dir = tempfile::tempdir().map_err(|e| io_error("create", Path::new("registry tempdir"), e))?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.path().join("data");
        let (auth_yaml, credentials) = match &auth {
            Auth::None => (String::new(), None),
            Auth::Htpasswd { user, password } => {
                let out = run("htpasswd", ["-Bbn", user.as_str(), password.as_str()])?;
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, &out.stdout).map_err(|e| io_error("write", &file, e))?;
                let yaml =
                    format!("auth:\n  htpasswd:\n    realm: sandpit-test\n    path: {}\n", file.display());
                (yaml, Some((user.clone(), password.clone())))
            }
            Auth::Token(token) => {
                let yaml = format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    token.realm,
                    token.service,
                    token.issuer,
                    token.root_cert_bundle.display()
                );
                (yaml, None)
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: sandpit-test-secret\n{auth_yaml}",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).map_err(|e| io_error("write", &config_path, e))?;
        let log_path = dir.path().join("registry.log");
        let log = File::create(&log_path).map_err(|e| io_error("create", &log_path, e))?;
        let log_err = log.try_clone().map_err(|e| io_error("clone", &log_path, e))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| TestkitError::Spawn { program: "docker-registry".into(), source })?;
        let mut registry = Self { addr, dir, child: Some(child), credentials };
        registry.wait_until_listening(&log_path)?;
        Ok(registry)
    }

    fn wait_until_listening(&mut self, log: &Path) -> Result<(), TestkitError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect(&self.addr).is_ok() {
                return Ok(());
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let output = std::fs::read_to_string(log).unwrap_or_default();
                return Err(TestkitError::NotReady {
                    what: format!("docker-registry on {}", self.addr),
                    output,
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`: the registry part of references (`127.0.0.1:PORT/repo:tag`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `addr/repo_tag`: a reference to pull from this registry.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }

    /// The registry's storage root (`rootdirectory`).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where the registry keeps a blob's bytes (overwrite it to corrupt the blob).
    pub fn blob_data_path(&self, digest_hex: &str) -> PathBuf {
        let prefix = digest_hex.get(..2).unwrap_or_default();
        self.storage_dir().join("docker/registry/v2/blobs/sha256").join(prefix).join(digest_hex).join("data")
    }

    /// Pushes `layout:tag` (an image or an index, with every image in it) to `repo_tag`
    /// (`repo:tag`) with skopeo, over plain HTTP, with the htpasswd user of [`Auth::Htpasswd`]
    /// or `creds` (`user`, `password`) for token registries.
    pub fn push(
        &self,
        layout: &OciLayout,
        tag: &str,
        repo_tag: &str,
        creds: Option<(&str, &str)>,
    ) -> Result<(), TestkitError> {
        let src = format!("oci:{}", layout.image(tag));
        let dst = format!("docker://{}/{repo_tag}", self.addr);
        let mut args =
            vec!["copy".to_owned(), "--quiet".into(), "--all".into(), "--dest-tls-verify=false".into()];
        let creds = creds.map(|(u, p)| (u.to_owned(), p.to_owned())).or_else(|| self.credentials.clone());
        if let Some((user, password)) = creds {
            args.push("--dest-creds".into());
            args.push(format!("{user}:{password}"));
        }
        args.push(src);
        args.push(dst);
        run("skopeo", &args).map(drop)
    }

    /// Kills the registry (to test an unreachable registry); idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> TestkitError {
    TestkitError::Io { action, path: path.to_owned(), source }
}

/// A free loopback port (bound once and released; a test registry takes it right after).
pub fn free_port() -> Result<u16, TestkitError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| io_error("bind", Path::new("127.0.0.1:0"), e))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| io_error("read address of", Path::new("listener"), e))
}

/// One request seen by a [`CountingProxy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `HEAD` …
    pub method: String,
    /// The path and query.
    pub path: String,
}

impl RecordedRequest {
    /// A `GET` of a blob (`/v2/<name>/blobs/sha256:…`).
    pub fn is_blob_get(&self) -> bool {
        self.method == "GET" && self.path.contains("/blobs/sha256:")
    }

    /// A `GET` or `HEAD` of a manifest (`/v2/<name>/manifests/<ref>`).
    pub fn is_manifest(&self) -> bool {
        (self.method == "GET" || self.method == "HEAD") && self.path.contains("/manifests/")
    }
}

#[derive(Debug, Default)]
struct ProxyState {
    upstream: Mutex<String>,
    requests: Mutex<Vec<RecordedRequest>>,
    connections: AtomicUsize,
    live: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
    /// Requests still to answer with a status of the proxy's own instead of forwarding them.
    failures: Mutex<(usize, u16)>,
    /// Requests whose path ends with this are held back until released.
    hold: Mutex<Option<String>>,
    released: Condvar,
}

/// A TCP proxy on loopback that forwards to a registry and records every HTTP request it
/// carries (method and path), so tests can count blob and manifest requests. When the upstream
/// cannot be reached it closes the connection at once (and still counts it).
#[derive(Debug)]
pub struct CountingProxy {
    addr: String,
    state: Arc<ProxyState>,
}

impl CountingProxy {
    /// Starts a proxy to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Result<Self, TestkitError> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| io_error("bind", Path::new("127.0.0.1:0"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| io_error("read address of", Path::new("proxy"), e))?
            .to_string();
        let state =
            Arc::new(ProxyState { upstream: Mutex::new(upstream.to_owned()), ..ProxyState::default() });
        let accept_state = Arc::clone(&state);
        thread::spawn(move || accept_loop(&listener, &accept_state));
        Ok(Self { addr, state })
    }

    /// `127.0.0.1:PORT`: use it as the registry part of references.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Points the proxy at another upstream (e.g. a closed port).
    pub fn set_upstream(&self, upstream: &str) {
        *lock(&self.state.upstream) = upstream.to_owned();
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// Blob GETs so far.
    pub fn blob_gets(&self) -> usize {
        self.requests().iter().filter(|r| r.is_blob_get()).count()
    }

    /// GETs of one blob so far.
    pub fn blob_gets_of(&self, digest: &str) -> usize {
        self.requests().iter().filter(|r| r.is_blob_get() && r.path.ends_with(digest)).count()
    }

    /// Manifest GETs and HEADs so far.
    pub fn manifest_requests(&self) -> usize {
        self.requests().iter().filter(|r| r.is_manifest()).count()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Answers the next `count` requests itself with `status` (and an empty body) instead of
    /// forwarding them, to test retries; they are still recorded.
    pub fn fail_next(&self, count: usize, status: u16) {
        *lock(&self.state.failures) = (count, status);
    }

    /// Holds back every request whose path ends with `suffix` (a blob digest, say) until
    /// [`Self::release`]: it is recorded at once but forwarded only then (or after a minute).
    /// Other requests pass meanwhile.
    pub fn hold(&self, suffix: &str) {
        *lock(&self.state.hold) = Some(suffix.to_owned());
    }

    /// Forwards the requests held back, and holds no more.
    pub fn release(&self) {
        *lock(&self.state.hold) = None;
        self.state.released.notify_all();
    }

    /// Forgets the requests and connections counted so far.
    pub fn reset(&self) {
        lock(&self.state.requests).clear();
        self.state.connections.store(0, Ordering::SeqCst);
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.release();
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        for stream in lock(&self.state.live).drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept_loop(listener: &TcpListener, state: &Arc<ProxyState>) {
    for client in listener.incoming() {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let upstream_addr = lock(&state.upstream).clone();
        let Ok(upstream) = TcpStream::connect(&upstream_addr) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let (Ok(client_w), Ok(upstream_r), Ok(c_keep), Ok(u_keep)) =
            (client.try_clone(), upstream.try_clone(), client.try_clone(), upstream.try_clone())
        else {
            continue;
        };
        lock(&state.live).extend([c_keep, u_keep]);
        let requests_state = Arc::clone(state);
        thread::spawn(move || forward_requests(client, upstream, &requests_state));
        thread::spawn(move || {
            let mut from = upstream_r;
            let mut to = client_w;
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Both);
        });
    }
}

/// Copies requests from the client to the upstream, recording each request line. Request
/// bodies are passed through by `Content-Length`; a chunked body ends the recording (the rest is
/// copied as is).
fn forward_requests(client: TcpStream, mut upstream: TcpStream, state: &ProxyState) {
    let Ok(mut client_w) = client.try_clone() else { return };
    let mut reader = BufReader::new(client);
    loop {
        let mut head = Vec::new();
        let mut content_length = 0u64;
        let mut chunked = false;
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => {
                    let _ = upstream.shutdown(Shutdown::Write);
                    return;
                }
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
            if let Some(v) = text.strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            if text.starts_with("transfer-encoding:") && text.contains("chunked") {
                chunked = true;
            }
            let end = line == b"\r\n" || line == b"\n";
            head.extend_from_slice(&line);
            if end {
                break;
            }
        }
        let request_line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
        let mut parts = request_line.split_whitespace();
        if let (Some(method), Some(path)) = (parts.next(), parts.next()) {
            lock(&state.requests).push(RecordedRequest { method: method.to_owned(), path: path.to_owned() });
        }
        let injected = {
            let mut failures = lock(&state.failures);
            (failures.0 > 0).then(|| {
                failures.0 -= 1;
                failures.1
            })
        };
        wait_while_held(state, &request_line);
        if let Some(status) = injected {
            let mut body = (&mut reader).take(content_length);
            let _ = std::io::copy(&mut body, &mut std::io::sink());
            let response = format!("HTTP/1.1 {status} Injected\r\nContent-Length: 0\r\n\r\n");
            if client_w.write_all(response.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        if upstream.write_all(&head).is_err() {
            return;
        }
        if chunked {
            let _ = std::io::copy(&mut reader, &mut upstream);
            return;
        }
        if content_length > 0 {
            let mut body = (&mut reader).take(content_length);
            if std::io::copy(&mut body, &mut upstream).is_err() {
                return;
            }
        }
    }
}

/// Waits while the proxy holds back requests like this one (`METHOD path HTTP/1.1`).
fn wait_while_held(state: &ProxyState, request_line: &str) {
    let path = request_line.split_whitespace().nth(1).unwrap_or_default();
    let deadline = Instant::now() + HOLD_TIMEOUT;
    let mut hold = lock(&state.hold);
    while hold.as_deref().is_some_and(|suffix| path.ends_with(suffix)) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        hold = state.released.wait_timeout(hold, left).unwrap_or_else(PoisonError::into_inner).0;
    }
}

/// A token service for registries in token mode: checks basic credentials and issues ES256
/// JWTs whose header carries the signing certificate (`x5c`), which the registry verifies against
/// [`TokenAuth::root_cert_bundle`]. Valid users get every action they ask for; anonymous callers
/// get pull access to the public repositories only; bad credentials get 401.
#[derive(Debug)]
pub struct TokenServer {
    addr: String,
    dir: tempfile::TempDir,
    state: Arc<TokenState>,
}

struct TokenState {
    users: HashMap<String, String>,
    public: Vec<String>,
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    issued: AtomicUsize,
    refused: AtomicUsize,
    stop: AtomicBool,
}

impl std::fmt::Debug for TokenState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenState").field("users", &self.users.keys()).field("public", &self.public).finish()
    }
}

/// The service name test registries in token mode use.
pub const TOKEN_SERVICE: &str = "sandpit-test-registry";
/// The issuer test tokens name.
pub const TOKEN_ISSUER: &str = "sandpit-test-issuer";

impl TokenServer {
    /// Starts a token service for `users` (`(name, password)`); `public` repositories may be
    /// pulled anonymously.
    pub fn start(users: &[(&str, &str)], public: &[&str]) -> Result<Self, TestkitError> {
        let dir = tempfile::tempdir().map_err(|e| io_error("create", Path::new("token tempdir"), e))?;
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| crypto("generate key", e))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|e| crypto("load key", e))?;
        let rc_key = rcgen::KeyPair::try_from(pkcs8.as_ref()).map_err(|e| crypto("load key", e))?;
        let mut params = rcgen::CertificateParams::new(vec!["sandpit-test-token".to_owned()])
            .map_err(|e| crypto("certificate parameters", e))?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "sandpit test token signer");
        let cert = params.self_signed(&rc_key).map_err(|e| crypto("sign certificate", e))?;
        let bundle = dir.path().join("token-root.pem");
        std::fs::write(&bundle, cert.pem()).map_err(|e| io_error("write", &bundle, e))?;

        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| io_error("bind", Path::new("127.0.0.1:0"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| io_error("read address of", Path::new("token server"), e))?
            .to_string();
        let state = Arc::new(TokenState {
            users: users.iter().map(|(u, p)| ((*u).to_owned(), (*p).to_owned())).collect(),
            public: public.iter().map(|p| (*p).to_owned()).collect(),
            key,
            cert_der: cert.der().to_vec(),
            issued: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let serve_state = Arc::clone(&state);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if serve_state.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let state = Arc::clone(&serve_state);
                thread::spawn(move || serve_token(stream, &state));
            }
        });
        Ok(Self { addr, dir, state })
    }

    /// What a registry needs to trust this service ([`Auth::Token`]).
    pub fn auth(&self) -> TokenAuth {
        TokenAuth {
            realm: format!("http://{}/token", self.addr),
            service: TOKEN_SERVICE.to_owned(),
            issuer: TOKEN_ISSUER.to_owned(),
            root_cert_bundle: self.dir.path().join("token-root.pem"),
        }
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> usize {
        self.state.issued.load(Ordering::SeqCst)
    }

    /// Requests refused (bad credentials) so far.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve_token(stream: TcpStream, state: &TokenState) {
    let Ok(write_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorization = None;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(value.trim().to_owned());
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let mut scopes = Vec::new();
    let mut service = String::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "scope" => scopes.extend(v.split(' ').map(str::to_owned)),
            "service" => service = v,
            _ => {}
        }
    }
    let user = match authorization.as_deref().and_then(|a| a.strip_prefix("Basic ")) {
        Some(encoded) => {
            let decoded = STANDARD.decode(encoded.trim()).ok().and_then(|b| String::from_utf8(b).ok());
            match decoded.as_deref().and_then(|d| d.split_once(':')) {
                Some((u, p)) if state.users.get(u).is_some_and(|want| want == p) => Some(u.to_owned()),
                _ => {
                    state.refused.fetch_add(1, Ordering::SeqCst);
                    respond(write_half, "401 Unauthorized", r#"{"details":"invalid credentials"}"#);
                    return;
                }
            }
        }
        None => None,
    };
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|scope| {
            let (typ, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            let granted: Vec<&str> = match &user {
                Some(_) => actions.split(',').collect(),
                None if state.public.iter().any(|p| p == name) => {
                    actions.split(',').filter(|a| *a == "pull").collect()
                }
                None => Vec::new(),
            };
            Some(serde_json::json!({"type": typ, "name": name, "actions": granted}))
        })
        .collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&state.cert_der)]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER,
        "sub": user.clone().unwrap_or_default(),
        "aud": if service.is_empty() { TOKEN_SERVICE.to_owned() } else { service },
        "exp": now + 300,
        "nbf": now.saturating_sub(10),
        "iat": now.saturating_sub(10),
        "jti": format!("{now}-{}", state.issued.load(Ordering::SeqCst)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let Ok(signature) = state.key.sign(&SystemRandom::new(), signing_input.as_bytes()) else {
        respond(write_half, "500 Internal Server Error", "{}");
        return;
    };
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
    state.issued.fetch_add(1, Ordering::SeqCst);
    let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    respond(write_half, "200 OK", &body);
}

fn crypto(what: &'static str, e: impl std::fmt::Display) -> TestkitError {
    TestkitError::Crypto { what, detail: e.to_string() }
}

fn respond(mut stream: TcpStream, status: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_escapes_plus_and_stray_percents() {
        assert_eq!(percent_decode("repository%3Ax%2Fy%3Apull"), "repository:x/y:pull");
        assert_eq!(percent_decode("a+b%20c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
