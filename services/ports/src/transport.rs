//! Transport traits: how the gateway reaches whoever decides, and where decisions go.

use async_trait::async_trait;
use presence_domain::inventory::{LineErrors, NumberedRecord};
use presence_domain::{
    AnnulRequest, Decision, DecisionEvent, Device, DeviceId, DeviceInitRequest, DeviceLookup,
    GateId, ScanId, ScanKind, ScanRequest, SecretDigest, Status, TicketQuery, TicketReport,
    VenueId, VenueStats,
};

/// Why a request got no answer. The gateway answers 503 UNAVAILABLE with
/// Retry-After; a retry of a scan returns its decision if it was applied.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
    #[error("no answer within the deadline")]
    Timeout,
}

/// One scan on its way to the validator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanCommand {
    pub scan_id: ScanId,
    pub kind: ScanKind,
    pub request: ScanRequest,
    /// The digest of the `X-Device-Secret` the scanner sent, if any (SPEC §7):
    /// the secret itself stays in the gateway.
    pub device_secret: Option<SecretDigest>,
    /// For a scan uploaded by `ticket/offline`: the status the scanner showed
    /// while it had no network (a passage it allowed is applied even when the
    /// rules refuse it). `None` for an online scan.
    pub shown: Option<Status>,
}

/// One annulment (`ticket/annul`) on its way to the validator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnulCommand {
    /// The annulment's own id (`result.scanId` of its answer).
    pub scan_id: ScanId,
    pub request: AnnulRequest,
    /// The digest of the `X-Device-Secret` sent, as for a scan (SPEC §7).
    pub device_secret: Option<SecretDigest>,
}

/// The answer to a scan: the decision and the id of the scan it was made for.
/// A retry answered from memory carries the first scan's id, the one under which
/// the decision is on the decisions stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub scan_id: ScanId,
    pub decision: Decision,
}

/// The registry's answer to device/init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceInitOutcome {
    Configured(Device),
    /// Configured at a venue that requires device secrets: the request's
    /// secret candidate is now the device's secret, to show once.
    ConfiguredWithSecret(Device),
    /// 404 NOT_FOUND.
    VenueNotFound,
    /// 400: `gateId` names no gate of the venue.
    UnknownGate(GateId),
    /// 400: the gate name is new and the venue has this many gates, its cap.
    TooManyGates(u64),
    /// 400: the MAC is new and the venue has this many devices, its cap.
    TooManyDevices(u64),
}

/// The answer to an inventory upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryOutcome {
    /// Every record applied; scans see them from now on.
    Applied(usize),
    /// Nothing applied: the bad lines.
    Rejected(LineErrors),
}

/// Request → answer, however the services are deployed.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    async fn scan(&self, command: ScanCommand) -> Result<Answer, TransportError>;

    /// Undoes a passage (SPEC §6), or says why not. A retry of an annulment
    /// carried out answers it again, with its scan id.
    async fn annul(&self, command: AnnulCommand) -> Result<Answer, TransportError>;

    async fn init_device(
        &self,
        request: DeviceInitRequest,
    ) -> Result<DeviceInitOutcome, TransportError>;

    async fn lookup_device(&self, lookup: DeviceLookup) -> Result<Option<Device>, TransportError>;

    /// Revokes the venue's device (SPEC §7): its requests are 403 until it is
    /// re-initialised. `None` when the venue has no such device.
    async fn revoke_device(
        &self,
        venue_id: &VenueId,
        device_id: DeviceId,
    ) -> Result<Option<Device>, TransportError>;

    /// Applies the records of one batch, all or nothing. `syntax_errors` are the
    /// batch's lines that did not parse: when there are any, nothing is applied and
    /// the rejection lists them together with the reference errors of the lines that
    /// did, so one answer names every bad line.
    async fn apply_inventory(
        &self,
        records: Vec<NumberedRecord>,
        syntax_errors: LineErrors,
    ) -> Result<InventoryOutcome, TransportError>;

    /// The venue's live counters; `None` when the venue is unknown. Counted from
    /// the decisions stream, so a decision shows here shortly after its answer
    /// (at once in embedded mode).
    async fn venue_stats(&self, venue_id: &VenueId) -> Result<Option<VenueStats>, TransportError>;

    /// A ticket's state, places and latest scans (`GET ticket`); `None` when
    /// the token is unknown or its event is at another venue.
    async fn ticket(&self, query: TicketQuery) -> Result<Option<TicketReport>, TransportError>;

    /// Succeeds when every dependency answers.
    async fn ready(&self) -> Result<(), TransportError>;
}

/// Where every decision goes: the `decisions` stream.
#[async_trait]
pub trait DecisionSink: Send + Sync + 'static {
    async fn publish(&self, event: DecisionEvent) -> Result<(), TransportError>;
}
