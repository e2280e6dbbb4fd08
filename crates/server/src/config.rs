//! Server configuration: defaults < TOML file < `SANDPIT_*` environment < command-line flags
//! (the flags are applied by the CLI).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use sandpit_types::ByteSize;
use sandpit_types::api::Limits;
use serde::{Deserialize, Serialize};

/// Default listening address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/sandpit";
/// The image built at first start, used when a create names none.
pub const DEFAULT_IMAGE: &str = "sandpit/busybox:latest";

/// Everything `sandpit serve` can be configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// Where the database, images, sandboxes and logs live.
    pub data_dir: PathBuf,
    /// Bounds and defaults of sandbox requests.
    pub limits: Limits,
    /// Image used when a create names none.
    pub default_image: String,
    /// How long a paused sandbox is kept before it is deleted (seconds).
    pub paused_retention_s: u64,
    /// OCI runtime binary.
    pub oci_runtime: PathBuf,
    /// Host uid (and gid) that sandbox root maps to.
    pub uid_base: u32,
    /// Size of each sandbox's writable disk.
    pub sandbox_disk: ByteSize,
    /// Most processes per sandbox.
    pub sandbox_pids: u32,
    /// Most bytes of workload log kept per sandbox.
    pub log_max_bytes: u64,
    /// Largest JSON request body.
    pub max_body_bytes: usize,
    /// Largest file upload.
    pub max_upload_bytes: u64,
    /// Where `serve` writes the first API key for the CLI (mode 0600). Default:
    /// `$HOME/.config/sandpit/credentials.json`.
    pub credentials_file: Option<PathBuf>,
    /// Whether the sandbox feature (the `/v1/sandboxes` routes and the web console's Sandboxes
    /// section) is on; also `SANDPIT_ENABLE_SANDBOX`, or `REACT_APP_ENABLE_SANDBOX` for
    /// deployments that already set it. When off, sandbox routes answer 404 `feature_disabled`.
    #[serde(deserialize_with = "lenient_bool")]
    pub enable_sandbox: bool,
    /// A simulated GPU inventory instead of the host's (`H100x2,T4x4`); also
    /// `SANDPIT_SIMULATE_GPUS`. Simulated GPUs are scheduled and billed but inject no device.
    pub simulate_gpus: Option<String>,
    /// Allow fractional GPUs on GPUs not in EXCLUSIVE_PROCESS compute mode (weaker isolation:
    /// see the GPU documentation).
    pub gpu_soft_sharing: bool,
    /// CPU the scheduler hands out, as a multiple of the host's cores (CPU limits are caps, and
    /// idle sandboxes use none).
    pub cpu_overcommit: u32,
    /// Memory the scheduler hands out, in percent of the host's memory.
    pub memory_overcommit_percent: u32,
    /// Registries reached over plain HTTP (`host:port`); every other one over HTTPS only. Also
    /// `SANDPIT_INSECURE_REGISTRIES=host:port,…`.
    #[serde(deserialize_with = "list_or_csv")]
    pub insecure_registries: Vec<String>,
    /// Attempts per registry request before a transient failure (connection, 5xx) is final.
    pub pull_attempts: u32,
    /// Delay before the second attempt, in milliseconds (doubled for each further one).
    pub pull_backoff_ms: u64,
    /// The layer cache is collected down to this size (least recently used images first; images
    /// of live sandboxes and pinned ones are kept).
    pub image_cache_max_bytes: ByteSize,
    /// Largest image (uncompressed) a pull or import may bring.
    pub max_image_bytes: ByteSize,
    /// The curated catalog file (default `<data_dir>/catalog.toml`, written on first start).
    pub catalog_file: Option<PathBuf>,
    /// Prices, metering and wallets.
    pub billing: BillingConfig,
    /// Identity verification.
    pub kyc: KycConfig,
    /// The domain of the e2b-compatible surface's Host-based routing (`49983-<id>.<domain>`),
    /// returned to the e2b SDK as the sandbox's `domain`; also `SANDPIT_E2B_DOMAIN`. Unset: the
    /// SDK reaches envd at its `E2B_SANDBOX_URL`, routed by the `E2b-Sandbox-Id` header.
    pub e2b_domain: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

/// Prices, metering and wallets (`[billing]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// The one currency of every wallet (a label: amounts are integer micro-units of it).
    pub currency: String,
    /// Prices per hour (`[billing.rates]`: `gpu = { H100 = "3.00", … }`, `cpu_per_vcpu_hour`,
    /// `memory_per_gib_hour`, `paused_disk_per_gib_hour`, `gpu_unknown_model`); missing ones take
    /// the defaults.
    pub rates: sandpit_billing::Rates,
    /// Seconds between two accruals of running sandboxes (1 to 10).
    pub meter_interval_s: u64,
    /// Credited to the `default` project on the first start, so a new server can run sandboxes.
    pub bootstrap_credit: sandpit_billing::Money,
    /// The low-balance threshold of a new wallet.
    pub low_balance_default: sandpit_billing::Money,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            currency: "USD".into(),
            rates: sandpit_billing::Rates::default(),
            meter_interval_s: 5,
            bootstrap_credit: sandpit_billing::Money::from_micros(100_000_000),
            low_balance_default: sandpit_billing::Money::from_micros(5_000_000),
        }
    }
}

/// Identity verification (`[kyc]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KycConfig {
    /// The shared secret the provider signs webhooks with (HMAC-SHA256); also
    /// `SANDPIT_KYC__WEBHOOK_SECRET`. Without it the webhook answers 503.
    pub webhook_secret: Option<SecretString>,
    /// Where a user goes to verify: `{reference}` is replaced by their verification reference.
    pub verification_url: Option<String>,
    /// Webhooks whose timestamp is further than this from the server's clock are refused.
    pub webhook_tolerance_s: u64,
}

impl Default for KycConfig {
    fn default() -> Self {
        Self { webhook_secret: None, verification_url: None, webhook_tolerance_s: 300 }
    }
}

/// A secret from the configuration: never printed (its `Debug` is redacted).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// A secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The variable older deployments of the web console set to turn the Sandboxes section on or off
/// (read by the server at start, below `SANDPIT_ENABLE_SANDBOX`).
pub const REACT_APP_ENABLE_SANDBOX: &str = "REACT_APP_ENABLE_SANDBOX";

/// Reads a flag as people write it: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
pub fn parse_flag(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Accepts a boolean, `0`/`1`, or a flag string (as environment variables give).
fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Int(i64),
        Str(String),
    }
    match Flag::deserialize(d)? {
        Flag::Bool(b) => Ok(b),
        Flag::Int(0) => Ok(false),
        Flag::Int(1) => Ok(true),
        Flag::Int(i) => Err(serde::de::Error::custom(format!("expected true or false, not {i}"))),
        Flag::Str(s) => parse_flag(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("expected true or false, not {s:?}"))),
    }
}

/// Accepts a TOML list or a comma-separated string (as environment variables give).
fn list_or_csv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(l) => l,
        ListOrCsv::Csv(s) => {
            s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(String::from).collect()
        }
    })
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 7700))),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            limits: Limits::default(),
            default_image: DEFAULT_IMAGE.to_string(),
            paused_retention_s: 7 * 24 * 3600,
            oci_runtime: PathBuf::from("runc"),
            uid_base: 1_000_000,
            sandbox_disk: ByteSize::gib(10),
            sandbox_pids: 1024,
            log_max_bytes: 10 << 20,
            max_body_bytes: 1 << 20,
            max_upload_bytes: 16 << 30,
            credentials_file: None,
            enable_sandbox: true,
            simulate_gpus: None,
            gpu_soft_sharing: false,
            cpu_overcommit: 64,
            memory_overcommit_percent: 100,
            insecure_registries: Vec::new(),
            pull_attempts: 4,
            pull_backoff_ms: 500,
            image_cache_max_bytes: ByteSize::gib(50),
            max_image_bytes: ByteSize::gib(16),
            catalog_file: None,
            billing: BillingConfig::default(),
            kyc: KycConfig::default(),
            e2b_domain: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

impl ServerConfig {
    /// Defaults, then `file` (TOML) if given, then `REACT_APP_ENABLE_SANDBOX`, then `SANDPIT_*`
    /// variables (nested keys with `__`, e.g. `SANDPIT_LIMITS__TIMEOUT_MAX_S`).
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut f = Figment::from(Serialized::defaults(Self::default()));
        if let Some(path) = file {
            f = f.merge(Toml::file_exact(path));
        }
        if let Some(v) = std::env::var_os(REACT_APP_ENABLE_SANDBOX) {
            let v = v.to_string_lossy();
            let on = parse_flag(&v).ok_or_else(|| {
                ConfigError(Box::new(figment::Error::from(format!(
                    "{REACT_APP_ENABLE_SANDBOX} must be true or false, not {v:?}"
                ))))
            })?;
            f = f.merge(Serialized::default("enable_sandbox", on));
        }
        f = f.merge(
            Env::prefixed("SANDPIT_")
                .split("__")
                // Variables of the CLI and of bootstrap, not configuration keys.
                .ignore(&["URL", "API_KEY", "BOOTSTRAP_KEY", "FAILPOINT", "CONFIG"]),
        );
        let config: Self = f.extract().map_err(|e| ConfigError(Box::new(e)))?;
        config.check()?;
        Ok(config)
    }

    /// Refuses values that parse but cannot work.
    fn check(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| ConfigError(Box::new(figment::Error::from(msg)));
        if !(1..=10).contains(&self.billing.meter_interval_s) {
            return Err(bad(format!(
                "billing.meter_interval_s must be 1 to 10 seconds, not {}",
                self.billing.meter_interval_s
            )));
        }
        if self.billing.bootstrap_credit.is_negative() || self.billing.low_balance_default.is_negative() {
            return Err(bad(
                "billing.bootstrap_credit and billing.low_balance_default must not be negative".into()
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(bad(
                "tls_cert_file and tls_key_file go together: set both for HTTPS, or neither".into()
            ));
        }
        if self.kyc.webhook_secret.as_ref().is_some_and(|s| s.expose().len() < 16) {
            return Err(bad("kyc.webhook_secret must be at least 16 characters".into()));
        }
        Ok(())
    }

    /// The database file.
    pub fn database(&self) -> PathBuf {
        self.data_dir.join("sandpit.db")
    }

    /// The image store.
    pub fn images_dir(&self) -> PathBuf {
        self.data_dir.join("images")
    }

    /// The local runtime's state.
    pub fn runtime_dir(&self) -> PathBuf {
        self.data_dir.join("runtime")
    }

    /// Archived logs of ended sandboxes.
    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// The catalog file.
    pub fn catalog_path(&self) -> PathBuf {
        self.catalog_file.clone().unwrap_or_else(|| self.data_dir.join("catalog.toml"))
    }

    /// The secret key sealing registry credentials.
    pub fn secret_key_path(&self) -> PathBuf {
        self.data_dir.join("secret.key")
    }

    /// Registry pull settings.
    pub fn pull_config(&self) -> sandpit_image::PullConfig {
        sandpit_image::PullConfig {
            insecure_registries: self.insecure_registries.clone(),
            max_attempts: self.pull_attempts.max(1),
            backoff: std::time::Duration::from_millis(self.pull_backoff_ms),
            ..Default::default()
        }
    }

    /// Where the CLI credentials go.
    pub fn credentials_path(&self) -> PathBuf {
        self.credentials_file.clone().unwrap_or_else(default_credentials_path)
    }
}

/// `$HOME/.config/sandpit/credentials.json` (the CLI reads the same path).
pub fn default_credentials_path() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".config/sandpit/credentials.json")
}

/// What `serve` writes for the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The server's base URL.
    pub url: String,
    /// The API key.
    pub api_key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type.
    fn file_then_environment_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sandpit.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:9000\"\n[limits]\ntimeout_default_s = 60\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("SANDPIT_DATA_DIR", "/srv/sandpit");
            jail.set_env("SANDPIT_LIMITS__TIMEOUT_MAX_S", "120");
            let c = ServerConfig::load(Some(&file)).map_err(|e| e.to_string())?;
            assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
            assert_eq!(c.data_dir, PathBuf::from("/srv/sandpit"));
            assert_eq!(c.limits.timeout_default_s, 60);
            assert_eq!(c.limits.timeout_max_s, 120);
            assert_eq!(c.default_image, DEFAULT_IMAGE);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type.
    fn the_sandbox_feature_flag_comes_from_file_react_app_and_sandpit_variables() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sandpit.toml");
        std::fs::write(&file, "enable_sandbox = false\n").unwrap();
        figment::Jail::expect_with(|jail| {
            assert!(ServerConfig::load(None).map_err(|e| e.to_string())?.enable_sandbox);
            assert!(!ServerConfig::load(Some(&file)).map_err(|e| e.to_string())?.enable_sandbox);
            jail.set_env(REACT_APP_ENABLE_SANDBOX, "true");
            assert!(ServerConfig::load(Some(&file)).map_err(|e| e.to_string())?.enable_sandbox);
            jail.set_env("SANDPIT_ENABLE_SANDBOX", "0");
            assert!(!ServerConfig::load(Some(&file)).map_err(|e| e.to_string())?.enable_sandbox);
            jail.set_env("SANDPIT_ENABLE_SANDBOX", "yes");
            assert!(ServerConfig::load(None).map_err(|e| e.to_string())?.enable_sandbox);
            jail.set_env("SANDPIT_ENABLE_SANDBOX", "maybe");
            assert!(ServerConfig::load(None).is_err());
            jail.set_env("SANDPIT_ENABLE_SANDBOX", "false");
            jail.set_env(REACT_APP_ENABLE_SANDBOX, "nope");
            let e = ServerConfig::load(None).unwrap_err().to_string();
            assert!(e.contains(REACT_APP_ENABLE_SANDBOX), "{e}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sandpit.toml");
        std::fs::write(&file, "lisen = \"0.0.0.0:9000\"\n").unwrap();
        let e = ServerConfig::load(Some(&file)).unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
    }
}
