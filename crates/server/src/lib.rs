//! sandpit's control plane: the HTTP API over the store and a backend, with the lifecycle
//! workflows and the reconcilers that keep stored state true to the host.
//!
//! [`Server::start`] opens (or creates) everything under the data directory, bootstraps a first
//! user and key, builds the default image, and recovers; [`Server::serve`] answers HTTP until
//! shutdown.

pub mod app;
pub mod auth;
pub mod billing;
pub mod bootstrap;
pub mod config;
pub mod e2b;
pub mod error;
pub mod gpus;
pub mod http;
pub mod hub;
pub mod images;
pub mod metrics;
pub mod reconcile;
pub mod secrets;
pub mod tls;
pub mod web;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use sandpit_image::{IdShift, ImageStore};
use sandpit_runtime::{Backend, LocalBackend, LocalConfig};
use sandpit_store::{SqliteStore, Store};
use tokio::net::TcpListener;
use tracing::info;

pub use app::App;
pub use bootstrap::Bootstrapped;
pub use config::ServerConfig;

/// Starting or running the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory is unusable.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] sandpit_store::StoreError),
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] sandpit_image::ImageError),
    /// The uid range is invalid.
    #[error("uid_base: {0}")]
    IdShift(#[from] sandpit_image::IdShiftError),
    /// The backend failed.
    #[error(transparent)]
    Runtime(#[from] sandpit_runtime::RuntimeError),
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Bootstrap failed.
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    /// The secret key is unusable.
    #[error(transparent)]
    Secrets(#[from] secrets::SecretError),
    /// The GPU inventory is unusable.
    #[error(transparent)]
    Gpus(#[from] gpus::InventoryError),
    /// Startup recovery failed.
    #[error("startup recovery: {0:?}")]
    Recovery(sandpit_types::ApiError),
    /// The listening socket failed.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A started server.
#[derive(Debug)]
pub struct Server {
    app: Arc<App>,
    bootstrapped: Option<Bootstrapped>,
}

impl Server {
    /// Opens the data directory with the local backend and recovers.
    pub async fn start(config: ServerConfig, bootstrap_key: Option<String>) -> Result<Self, ServeError> {
        let data = config.data_dir.clone();
        let dir_err = |source| ServeError::DataDir { path: data.clone(), source };
        std::fs::create_dir_all(&data).map_err(dir_err)?;
        // Sandbox root (an unprivileged host uid) must traverse it to reach its rootfs.
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o711)).map_err(dir_err)?;
        std::fs::create_dir_all(config.logs_dir()).map_err(dir_err)?;
        std::fs::set_permissions(config.logs_dir(), std::fs::Permissions::from_mode(0o700))
            .map_err(dir_err)?;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.database()).await?);
        let shift = IdShift::new(config.uid_base, 65536)?;
        let images = Arc::new(
            ImageStore::open(config.images_dir(), shift)?.with_max_image_size(config.max_image_bytes),
        );
        let mut local = LocalConfig::new(config.runtime_dir());
        local.oci_runtime = config.oci_runtime.clone();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::open(local, images.clone())?);
        Self::with_parts(config, store, backend, images, bootstrap_key).await
    }

    /// Assembles a server from its parts (tests use other backends).
    pub async fn with_parts(
        config: ServerConfig,
        store: Arc<dyn Store>,
        backend: Arc<dyn Backend>,
        images: Arc<ImageStore>,
        bootstrap_key: Option<String>,
    ) -> Result<Self, ServeError> {
        let bootstrapped = bootstrap::first_start(store.as_ref(), &config, bootstrap_key).await?;
        {
            let (images, config) = (images.clone(), config.clone());
            tokio::task::spawn_blocking(move || bootstrap::default_image(&images, &config)).await.map_err(
                |e| ServeError::Recovery(sandpit_types::ApiError::Internal { request_id: e.to_string() }),
            )??;
        }
        let gpus = gpus::Gpus::detect(&config)?;
        let catalog = sandpit_image::Catalog::load_or_init(&config.catalog_path())?;
        let secrets = secrets::SecretBox::open_or_create(&config.secret_key_path())?;
        let app = App::new(config, store, backend, images, gpus, catalog, secrets);
        reconcile::startup(&app).await.map_err(|e| ServeError::Recovery(e.0))?;
        app.tasks.spawn(reconcile::deadlines(app.clone()));
        app.tasks.spawn(reconcile::retention(app.clone()));
        app.tasks.spawn(reconcile::gauges(app.clone()));
        app.tasks.spawn(images::gc_loop(app.clone()));
        app.tasks.spawn(billing::meter_loop(app.clone()));
        if app.gpus.host.is_some() {
            app.tasks.spawn(reconcile::gpu_watchdog(app.clone()));
        }
        Ok(Self { app, bootstrapped })
    }

    /// The application.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// What bootstrap created, on a first start.
    pub fn bootstrapped(&self) -> Option<&Bootstrapped> {
        self.bootstrapped.as_ref()
    }

    /// Binds the configured address.
    pub async fn bind(&self) -> Result<TcpListener, ServeError> {
        let addr = self.app.config.listen;
        TcpListener::bind(addr).await.map_err(|source| ServeError::Listen { addr, source })
    }

    /// Answers HTTP on `listener` until `shutdown` resolves, then stops the background work.
    /// Sandboxes keep running; the next start adopts them.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let router = http::router(self.app.clone());
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Listen { addr: self.app.config.listen, source })?;
        info!(%addr, "sandpit API listening");
        let token = self.app.shutdown.clone();
        let shutdown = async move {
            tokio::select! {
                () = shutdown => {}
                () = token.cancelled() => {}
            }
        };
        let tls = match (&self.app.config.tls_cert_file, &self.app.config.tls_key_file) {
            (Some(cert), Some(key)) => Some(tls::server_config(cert, key).map_err(ServeError::Tls)?),
            _ => None,
        };
        let result = match tls {
            Some(tls) => {
                info!(%addr, "serving HTTPS");
                let listener = tls::TlsListener::new(listener, tls)
                    .map_err(|source| ServeError::Listen { addr, source })?;
                axum::serve(listener, router).with_graceful_shutdown(shutdown).await
            }
            None => {
                // Streams write small frames back to back (NDJSON events, SSE): without
                // TCP_NODELAY, Nagle's algorithm holds the second until the first is
                // acknowledged (40 ms delayed ACK).
                let listener =
                    axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
                        let _ = tcp.set_nodelay(true);
                    });
                axum::serve(listener, router).with_graceful_shutdown(shutdown).await
            }
        };
        self.app.shutdown.cancel();
        self.app.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.app.tasks.wait()).await;
        info!("sandpit stopped");
        result.map_err(|source| ServeError::Listen { addr, source })
    }
}
