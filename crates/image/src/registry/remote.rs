//! One conversation with a registry on behalf of one caller: an `oci-client` client made for
//! this (registry, credentials) pair alone, requests retried with exponential backoff when the
//! failure is transient, and errors mapped to [`PullError`].
//!
//! `oci-client` keeps the first credentials it sees per registry for the client's lifetime, so a
//! client is never reused across callers: a [`Remote`] is made per pull or access check.
//!
//! The auth handshake is done here rather than by `oci-client` (which reads a 5xx on `GET /v2/`
//! as "no auth needed" and then fails with 401), and its result is put in the client's token
//! cache:
//!
//! ```text
//!  GET /v2/ ──► 2xx: no auth ──────────────────────────────────────► anonymous requests
//!   (retried)  401 Basic: credentials? ──► Basic token in the cache
//!              401 Bearer realm, service ──► GET realm?scope=repository:<repo>:pull&service
//!                   (with the credentials, retried) ──► 200: bearer token in the cache
//!                                                       401/403: AuthFailed
//! ```

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol, linux_amd64_resolver};
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::secrets::RegistryAuth;
use oci_client::token_cache::{RegistryToken, RegistryTokenType};
use oci_client::{Client, Reference, RegistryOperation};
use oci_spec::image::ImageManifest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::PullConfig;
use super::credentials::RegistryCredentials;
use super::error::{Failure, NetworkCause, PullError, RequestContext, redacted_chain};
use crate::digest::Sha256Digest;
use crate::document::{self, MAX_INDEX_DEPTH, TopDocument};
use crate::error::{DigestSubject, ImageError};
use crate::media::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};

/// The manifest media types asked for.
const ACCEPTED_MANIFESTS: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST];

/// A stream of blob bytes (digest checks are the store's).
pub(crate) type BlobStream = BoxStream<'static, std::io::Result<bytes::Bytes>>;

/// How requests are retried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Attempts per request, at least one.
    pub(crate) max_attempts: u32,
    /// Delay before the second attempt; doubled for each further one.
    pub(crate) backoff: Duration,
    /// The longest delay.
    pub(crate) max_backoff: Duration,
}

impl RetryPolicy {
    /// The delay after failed attempt number `attempt` (1-based).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// The largest token response read.
const MAX_TOKEN_RESPONSE: usize = 1 << 20;

/// How the registry wants to be authenticated with.
#[derive(Debug)]
enum Challenge {
    /// It does not.
    None,
    /// HTTP basic auth.
    Basic,
    /// Bearer tokens from a token service.
    Bearer { realm: String, service: Option<String> },
}

/// A registry client for one reference and one caller's credentials.
pub(crate) struct Remote {
    client: Client,
    http: reqwest::Client,
    auth: RegistryAuth,
    credentials: Option<RegistryCredentials>,
    reference: Reference,
    context: RequestContext,
    retry: RetryPolicy,
    /// Whether the registry is reached over HTTPS (it is not listed as insecure).
    https: bool,
    probe_timeout: Duration,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("reference", &self.context.reference)
            .field("anonymous", &self.credentials.is_none())
            .finish_non_exhaustive()
    }
}

impl Remote {
    /// A fresh client for `reference` with `credentials` (anonymous without).
    pub(crate) fn new(
        config: &PullConfig,
        reference: Reference,
        credentials: Option<&RegistryCredentials>,
    ) -> Result<Self, PullError> {
        let https = !config.insecure_registries.iter().any(|r| r == reference.resolve_registry());
        let client_config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(config.insecure_registries.clone()),
            platform_resolver: Some(Box::new(linux_amd64_resolver)),
            connect_timeout: Some(config.connect_timeout),
            read_timeout: Some(config.read_timeout),
            ..ClientConfig::default()
        };
        let client = Client::try_from(client_config)
            .map_err(|_| PullError::Internal { what: "the registry client could not be set up" })?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .user_agent(concat!("sandpit/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| PullError::Internal { what: "the registry client could not be set up" })?;
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username().to_owned(), c.password().to_owned()),
            None => RegistryAuth::Anonymous,
        };
        let context = RequestContext {
            registry: reference.registry().to_owned(),
            repository: reference.repository().to_owned(),
            reference: reference.whole(),
        };
        Ok(Self {
            client,
            http,
            auth,
            credentials: credentials.cloned(),
            reference,
            context,
            retry: RetryPolicy {
                max_attempts: config.max_attempts.max(1),
                backoff: config.backoff,
                max_backoff: config.max_backoff,
            },
            https,
            probe_timeout: config.connect_timeout,
        })
    }

    /// The registry host as the reference names it (`docker.io`, `127.0.0.1:5000`).
    pub(crate) fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// The repository (`library/busybox`).
    pub(crate) fn repository(&self) -> &str {
        self.reference.repository()
    }

    /// The retry policy.
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// The error for a registry that kept failing.
    pub(crate) fn unreachable(&self, cause: NetworkCause, attempts: u32) -> PullError {
        PullError::Unreachable { registry: self.context.registry.clone(), cause, attempts }
    }

    /// Runs `op` until it succeeds, fails for good, or runs out of attempts.
    async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T, PullError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut attempt = 1;
        loop {
            let failure = match op().await {
                Ok(value) => return Ok(value),
                // A plain-HTTP registry reached over HTTPS never answers the TLS client hello:
                // the connection times out. Asking it over HTTP tells that apart (once).
                Err(Failure::Transient(NetworkCause::Connect | NetworkCause::Timeout))
                    if attempt == 1 && self.https && self.serves_plain_http().await =>
                {
                    Failure::Final(PullError::TlsFailed { registry: self.context.registry.clone() })
                }
                Err(other) => other,
            };
            match failure {
                Failure::Final(e) => return Err(e),
                Failure::Transient(cause) if attempt >= self.retry.max_attempts => {
                    return Err(self.unreachable(cause, attempt));
                }
                Failure::Transient(_) => {
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Logs a failed request (secrets redacted) and maps it.
    fn failed(
        &self,
        request: &'static str,
        error: &(dyn std::error::Error + 'static),
        failure: Failure,
    ) -> Failure {
        let secrets: Vec<&str> = self.credentials.iter().map(RegistryCredentials::password).collect();
        tracing::debug!(
            registry = %self.context.registry,
            request,
            error = %redacted_chain(error, &secrets),
            "registry request failed"
        );
        failure
    }

    fn oci_failure(&self, request: &'static str, error: &OciDistributionError) -> Failure {
        self.failed(request, error, self.context.classify(error))
    }

    fn http_failure(&self, request: &'static str, error: &reqwest::Error) -> Failure {
        self.failed(request, error, self.context.classify_http(error))
    }

    /// Whether the registry answers a plain-HTTP `GET /v2/` like a registry does (200 or 401).
    /// Sends no credentials.
    async fn serves_plain_http(&self) -> bool {
        let host = self.reference.resolve_registry();
        let address =
            if host.rsplit_once(':').is_some_and(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())) {
                host.to_owned()
            } else {
                format!("{host}:443")
            };
        let probe = async {
            let mut stream = tokio::net::TcpStream::connect(&address).await.ok()?;
            let request = format!("GET /v2/ HTTP/1.0\r\nHost: {host}\r\nUser-Agent: sandpit\r\n\r\n");
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut head = [0u8; 16];
            let mut filled = 0;
            while filled < head.len() {
                let n = stream.read(&mut head[filled..]).await.ok()?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            let line = std::str::from_utf8(&head[..filled]).ok()?;
            let status = line.strip_prefix("HTTP/1.")?.get(2..5)?;
            Some(status == "200" || status == "401")
        };
        let answer = tokio::time::timeout(self.probe_timeout, probe).await.ok().flatten();
        answer == Some(true)
    }

    /// Asks the registry how to authenticate and, for token auth, gets a pull token with the
    /// credentials (anonymously without); the result goes into the client's token cache. Bad
    /// credentials fail here when a token service refuses them, else at the first request.
    pub(crate) async fn authenticate(&self) -> Result<(), PullError> {
        let token = match self.retrying(|| self.ping()).await? {
            Challenge::None => return Ok(()),
            Challenge::Basic => match &self.credentials {
                Some(c) => RegistryTokenType::Basic(c.username().to_owned(), c.password().to_owned()),
                None => return Ok(()),
            },
            Challenge::Bearer { realm, service } => {
                RegistryTokenType::Bearer(self.retrying(|| self.token(&realm, service.as_deref())).await?)
            }
        };
        self.client.tokens.insert(&self.reference, RegistryOperation::Pull, token).await;
        Ok(())
    }

    fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// `GET /v2/`: what the registry asks for.
    async fn ping(&self) -> Result<Challenge, Failure> {
        let url = format!("{}://{}/v2/", self.scheme(), self.reference.resolve_registry());
        let response = self.http.get(&url).send().await.map_err(|e| self.http_failure("ping", &e))?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(Challenge::None);
        }
        if status != 401 {
            return Err(match status {
                404 => Failure::Final(self.context.protocol(Some(404))),
                other => self.context.by_status(other),
            });
        }
        let header = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        parse_challenge(header).ok_or_else(|| Failure::Final(self.context.protocol(Some(401))))
    }

    /// A pull token for this repository from the token service.
    async fn token(&self, realm: &str, service: Option<&str>) -> Result<RegistryToken, Failure> {
        let scope = format!("repository:{}:pull", self.reference.repository());
        let mut query = vec![("scope", scope.as_str())];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let mut request = self.http.get(realm).query(&query);
        if let Some(c) = &self.credentials {
            request = request.basic_auth(c.username(), Some(c.password()));
        }
        let response = request.send().await.map_err(|e| self.http_failure("fetch token", &e))?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            401 | 403 => return Err(Failure::Final(self.context.auth_failed())),
            other => return Err(self.context.by_status(other)),
        }
        if response.content_length().is_some_and(|l| l > MAX_TOKEN_RESPONSE as u64) {
            return Err(Failure::Final(self.context.protocol(Some(status))));
        }
        let body = response.bytes().await.map_err(|e| self.http_failure("read token", &e))?;
        if body.len() > MAX_TOKEN_RESPONSE {
            return Err(Failure::Final(self.context.protocol(Some(status))));
        }
        serde_json::from_slice(&body).map_err(|_| Failure::Final(self.context.protocol(Some(status))))
    }

    /// The image manifest for this host and its digest, following an index to the entry for
    /// linux on this host's architecture. Every document is checked against the digest and size
    /// it was named by.
    pub(crate) async fn manifest(&self) -> Result<(Sha256Digest, ImageManifest), PullError> {
        let mut reference = self.reference.clone();
        let mut expected: Option<(Sha256Digest, u64)> = None;
        for _ in 0..=MAX_INDEX_DEPTH {
            let (bytes, _) = self
                .retrying(|| async {
                    self.client
                        .pull_manifest_raw(&reference, &self.auth, ACCEPTED_MANIFESTS)
                        .await
                        .map_err(|e| self.oci_failure("fetch manifest", &e))
                })
                .await?;
            let digest = match expected {
                Some((digest, size)) => {
                    document::verify(&bytes, &digest, Some(size), DigestSubject::Manifest)?;
                    digest
                }
                None => {
                    document::check_size_limit(bytes.len() as u64, DigestSubject::Manifest)?;
                    Sha256Digest::of(&bytes)
                }
            };
            match document::parse_top(&bytes)? {
                TopDocument::Manifest(manifest) => return Ok((digest, *manifest)),
                TopDocument::Index(index) => {
                    let chosen = document::choose_from_index(&index)?;
                    expected = Some((Sha256Digest::from_oci(chosen.digest())?, chosen.size()));
                    reference = self.reference.clone_with_digest(chosen.digest().to_string());
                }
            }
        }
        Err(ImageError::IndexTooDeep { limit: MAX_INDEX_DEPTH }.into())
    }

    /// A document blob (the config), at most `MAX_DOCUMENT_BYTES`; the caller verifies it.
    pub(crate) async fn document(&self, digest: &Sha256Digest, size: u64) -> Result<Vec<u8>, PullError> {
        document::check_size_limit(size, DigestSubject::Config)?;
        let mut attempt = 1;
        loop {
            let mut stream = self.blob(digest, size).await?;
            let mut bytes = Vec::new();
            let mut broken = false;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(chunk) => {
                        bytes.extend_from_slice(&chunk);
                        document::check_size_limit(bytes.len() as u64, DigestSubject::Config)?;
                    }
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
            if !broken {
                return Ok(bytes);
            }
            if attempt >= self.retry.max_attempts {
                return Err(self.unreachable(NetworkCause::ConnectionLost, attempt));
            }
            tokio::time::sleep(self.retry.delay(attempt)).await;
            attempt += 1;
        }
    }

    /// Starts downloading a blob of `size` bytes (as its descriptor says). Every caller checks
    /// the blob's digest itself, so the whole blob is asked for as a range (`bytes=0-`): a
    /// registry that honours ranges answers 206, which `oci-client` passes through without hashing
    /// it a second time; one that does not answers 200, which `oci-client` hashes too. Then the
    /// stream ends early instead of failing when that check fails at the end: the caller reports
    /// the mismatch as such. An empty blob is asked for plainly (no range fits it).
    pub(crate) async fn blob(&self, digest: &Sha256Digest, size: u64) -> Result<BlobStream, PullError> {
        let digest = digest.to_string();
        let sized = self
            .retrying(|| async {
                let response = if size == 0 {
                    self.client.pull_blob_stream(&self.reference, digest.as_str()).await
                } else {
                    self.client.pull_blob_stream_partial(&self.reference, digest.as_str(), 0, None).await.map(
                        |response| match response {
                            BlobResponse::Full(stream) | BlobResponse::Partial(stream) => stream,
                        },
                    )
                };
                response.map_err(|e| self.oci_failure("fetch blob", &e))
            })
            .await?;
        let stream = sized.stream.take_while(|chunk| {
            let digest_failure = chunk
                .as_ref()
                .err()
                .and_then(|e| e.get_ref())
                .is_some_and(|inner| inner.downcast_ref::<DigestError>().is_some());
            std::future::ready(!digest_failure)
        });
        Ok(Box::pin(stream))
    }

    /// Asks for the manifest (HEAD, or GET when the registry sends no digest header) without
    /// transferring any layer: succeeds when these credentials may pull the image.
    pub(crate) async fn check_manifest(&self) -> Result<(), PullError> {
        self.retrying(|| async {
            self.client
                .fetch_manifest_digest(&self.reference, &self.auth)
                .await
                .map_err(|e| self.oci_failure("check manifest", &e))
        })
        .await
        .map(drop)
    }
}

/// Parses a `WWW-Authenticate` header: `Basic realm="…"` or
/// `Bearer realm="…",service="…",scope="…"` (the first challenge only).
fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(',').map_or((after, ""), |(v, a)| (v, a)),
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value.to_owned()),
            "service" => service = Some(value.to_owned()),
            _ => {}
        }
        rest = after.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer { realm: realm?, service })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed_for_basic_and_bearer() {
        assert!(matches!(parse_challenge(r#"Basic realm="x""#), Some(Challenge::Basic)));
        let bearer = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        let Some(Challenge::Bearer { realm, service }) = bearer else { panic!("{bearer:?}") };
        assert_eq!(
            (realm.as_str(), service.as_deref()),
            ("https://auth.example/token", Some("registry.example"))
        );
        assert!(parse_challenge(r#"Bearer service="s""#).is_none());
        assert!(parse_challenge("Negotiate abc").is_none());
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let policy = RetryPolicy {
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
        };
        let delays: Vec<_> = (1..=4).map(|a| policy.delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
    }
}
