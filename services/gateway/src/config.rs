//! How the gateway behaves: limits and deadlines.

use std::time::Duration;

/// Limits and deadlines of the HTTP gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Largest body accepted under `/presence/v1/` (413 beyond).
    pub body_limit: usize,
    /// Largest NDJSON body accepted by `/admin/v1/inventory` (413 beyond).
    pub inventory_limit: usize,
    /// How long a scan, device request or readiness check waits for its answer
    /// before the gateway answers 503 UNAVAILABLE.
    pub decision_timeout: Duration,
    /// The `Retry-After` sent with 503 answers; whole seconds, at least 1.
    pub retry_after: Duration,
    /// Longest a `/presence/v1/` or operations request may take in total, body
    /// upload included, so no connection is held forever.
    pub request_timeout: Duration,
    /// Longest an `/admin/v1/` request may take: inventories are large.
    pub admin_timeout: Duration,
    /// How long `/readyz` stays red before the listener closes on shutdown, so load
    /// balancers stop sending new requests first.
    pub shutdown_grace: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            body_limit: 64 * 1024,
            inventory_limit: 256 * 1024 * 1024,
            decision_timeout: Duration::from_secs(2),
            retry_after: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            admin_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::ZERO,
        }
    }
}

impl GatewayConfig {
    /// The `Retry-After` value: whole seconds, rounded up, never 0.
    pub(crate) fn retry_after_seconds(&self) -> u64 {
        let seconds = self.retry_after.as_secs();
        let rounded = if self.retry_after.subsec_nanos() > 0 {
            seconds.saturating_add(1)
        } else {
            seconds
        };
        rounded.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let with = |retry_after| GatewayConfig {
            retry_after,
            ..GatewayConfig::default()
        };
        assert_eq!(with(Duration::ZERO).retry_after_seconds(), 1);
        assert_eq!(with(Duration::from_millis(1500)).retry_after_seconds(), 2);
        assert_eq!(with(Duration::from_secs(3)).retry_after_seconds(), 3);
    }
}
