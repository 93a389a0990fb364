//! The Prometheus registry behind a service's `/metrics`, shared by everything
//! in the process that has figures to show (the gateway, the Kafka runner, the
//! store).

use prometheus_client::registry::Registry;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

/// What `/metrics` sends: prometheus-client writes OpenMetrics text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry behind `/metrics`; clones share it. Names get the `presence_`
/// prefix.
#[derive(Clone)]
pub struct MetricsHandle {
    registry: Arc<RwLock<Registry>>,
}

impl Default for MetricsHandle {
    fn default() -> Self {
        Self {
            registry: Arc::new(RwLock::new(Registry::with_prefix("presence"))),
        }
    }
}

impl MetricsHandle {
    /// Gives the registry to `register`.
    pub fn with_registry<R>(&self, register: impl FnOnce(&mut Registry) -> R) -> R {
        let mut registry = self
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        register(&mut registry)
    }

    /// The OpenMetrics text of every registered metric.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let registry = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

impl fmt::Debug for MetricsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsHandle").finish_non_exhaustive()
    }
}
