//! Where audit records go (SPEC §6 "Audit"): the `audit` topic in the
//! distributed deployment, a file in the data directory in the embedded one.

use crate::transport::TransportError;
use async_trait::async_trait;
use presence_domain::AuditRecord;

/// Stores audit records. The gateway calls it after the change it records was
/// made, and awaits it: when `record` returns `Ok`, the record is durable (on
/// disk, or acknowledged by the brokers) and readable by `presence audit tail`.
#[async_trait]
pub trait AuditSink: Send + Sync + 'static {
    async fn record(&self, record: AuditRecord) -> Result<(), TransportError>;
}
