//! Prometheus metrics: sandboxes by state, create and exec latency, reconciler lag.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The server's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    handle: Option<PrometheusHandle>,
}

impl Metrics {
    /// Installs the process-wide recorder on first use (several servers in one test process share
    /// it).
    pub fn new() -> Self {
        let handle = HANDLE
            .get_or_init(|| {
                let recorder = PrometheusBuilder::new()
                    .set_buckets(&[
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    ])
                    .ok()?
                    .build_recorder();
                let handle = recorder.handle();
                metrics::set_global_recorder(recorder).ok()?;
                Some(handle)
            })
            .clone();
        Self { handle }
    }

    /// Time from create request to running.
    pub fn observe_create(&self, d: Duration) {
        metrics::histogram!("sandpit_create_seconds").record(d.as_secs_f64());
    }

    /// Time the backend took to create a sandbox (the part of a create that is not the API's).
    pub fn observe_backend_create(&self, d: Duration) {
        metrics::histogram!("sandpit_backend_create_seconds").record(d.as_secs_f64());
    }

    /// Time of an exec round trip (request to exit).
    pub fn observe_exec(&self, d: Duration) {
        metrics::histogram!("sandpit_exec_seconds").record(d.as_secs_f64());
    }

    /// How late the timeout reconciler ended a sandbox after its deadline.
    pub fn observe_reconciler_lag(&self, d: Duration) {
        metrics::histogram!("sandpit_reconciler_lag_seconds").record(d.as_secs_f64());
    }

    /// Sets the number of sandboxes in a state.
    pub fn set_sandboxes(&self, state: &str, n: u64) {
        metrics::gauge!("sandpit_sandboxes", "state" => state.to_string()).set(n as f64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.as_ref().map(PrometheusHandle::render).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
