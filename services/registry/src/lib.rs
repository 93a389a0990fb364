//! The device registry: device/init and device lookup, and ticket lookup
//! (`GET ticket`: a read of the ticket store, answered here because the
//! registry already answers requests from the store in distributed mode).
//!
//! It owns the rules of configuring a scanner at a venue: the venue must exist,
//! the gate is found by name (created on first use) or by id (must exist at that
//! venue), and a re-init of the same (venue, MAC) keeps the device id. Storage is
//! behind [`DeviceStore`].
//!
//! It also answers the live view of a venue ([`StatsView`]); in distributed mode
//! it keeps that view by counting the decisions stream (`distributed`).

#[cfg(feature = "distributed")]
pub mod distributed;
mod stats;

pub use stats::StatsView;

use presence_domain::{
    Device, DeviceId, DeviceInitRequest, DeviceLookup, GateRef, TicketQuery, TicketReport, VenueId,
};
use presence_ports::{
    DeviceDraft, DeviceInitOutcome, DeviceStore, StoreError, Stores, TicketHistory, TicketStore,
};
use std::sync::Arc;

/// Default most gates a venue may have: ten times a large stadium's.
pub const DEFAULT_MAX_GATES_PER_VENUE: u64 = 1_000;
/// Default most devices a venue may have: a large stadium runs a few hundred
/// scanners, and a device re-initialised at another gate is still one device.
pub const DEFAULT_MAX_DEVICES_PER_VENUE: u64 = 10_000;

/// How many gates and devices device/init may create at one venue. Without
/// them, every init with a new name or MAC adds a record forever. Re-inits of a
/// known device and known gate names are never refused; inventory gate records
/// are not capped (an admin uploads them) but count towards the gate cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VenueCaps {
    pub max_gates: u64,
    pub max_devices: u64,
}

impl Default for VenueCaps {
    fn default() -> Self {
        Self {
            max_gates: DEFAULT_MAX_GATES_PER_VENUE,
            max_devices: DEFAULT_MAX_DEVICES_PER_VENUE,
        }
    }
}

/// The caps' flags, with their environment twins, for every binary that runs
/// a registry (`presence serve`, `presence-registry`).
#[derive(Debug, Clone, clap::Args)]
pub struct VenueCapArgs {
    /// Most gates a venue may have; device/init with a new gate name beyond it is 400.
    #[arg(long, env = "PRESENCE_MAX_GATES_PER_VENUE", default_value_t = DEFAULT_MAX_GATES_PER_VENUE,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_gates_per_venue: u64,
    /// Most devices a venue may have; device/init with a new MAC beyond it is 400.
    #[arg(long, env = "PRESENCE_MAX_DEVICES_PER_VENUE", default_value_t = DEFAULT_MAX_DEVICES_PER_VENUE,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_devices_per_venue: u64,
}

impl VenueCapArgs {
    pub fn caps(&self) -> VenueCaps {
        VenueCaps {
            max_gates: self.max_gates_per_venue,
            max_devices: self.max_devices_per_venue,
        }
    }
}

/// Configures and finds devices. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    devices: Arc<dyn DeviceStore>,
    tickets: Arc<dyn TicketStore>,
    caps: VenueCaps,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(stores: &Stores, caps: VenueCaps) -> Self {
        Self {
            devices: stores.devices.clone(),
            tickets: stores.tickets.clone(),
            caps,
        }
    }

    /// Configures a device. A new MAC at a venue that has its cap of devices, or
    /// a new gate name at a venue that has its cap of gates, is refused before
    /// anything is written; the caps are checked before creating, so inits
    /// racing at the cap may pass it by their number.
    #[tracing::instrument(skip_all, fields(venue = %request.venue_id, mac = %request.mac))]
    ///
    /// At a venue that requires device secrets (SPEC §7) the request's secret
    /// candidate becomes the device's secret, replacing any earlier one; every
    /// init also lifts a revocation.
    pub async fn init(&self, request: DeviceInitRequest) -> Result<DeviceInitOutcome, StoreError> {
        let Some(venue) = self.devices.venue(&request.venue_id).await? else {
            return Ok(DeviceInitOutcome::VenueNotFound);
        };
        let counts = self.devices.venue_counts(&request.venue_id).await?;
        if counts.devices >= self.caps.max_devices
            && self
                .devices
                .device_by_mac(&request.venue_id, &request.mac)
                .await?
                .is_none()
        {
            return Ok(DeviceInitOutcome::TooManyDevices(self.caps.max_devices));
        }
        let gate = match &request.gate {
            GateRef::Name(name) => {
                match self.devices.gate_by_name(&request.venue_id, name).await? {
                    Some(gate) => gate,
                    None if counts.gates >= self.caps.max_gates => {
                        return Ok(DeviceInitOutcome::TooManyGates(self.caps.max_gates));
                    }
                    None => self.devices.ensure_gate(&request.venue_id, name).await?,
                }
            }
            GateRef::Id(id) => match self.devices.gate(*id).await? {
                Some(gate) if gate.spec.venue_id == request.venue_id => gate,
                _ => return Ok(DeviceInitOutcome::UnknownGate(*id)),
            },
        };
        let draft = DeviceDraft {
            venue_id: request.venue_id,
            name: request.name,
            mac: request.mac,
            ip: request.ip.to_string(),
            gate_id: gate.id,
            gate_name: gate.spec.name,
            serial: request.serial,
            model: request.model,
            secret: request
                .secret_candidate
                .filter(|_| venue.require_device_secret),
        };
        let device = self.devices.save_device(draft).await?;
        let secret_issued = device.access.secret.is_some();
        tracing::info!(device = %device.id, gate = %device.gate_id, secret_issued, "device configured");
        Ok(if secret_issued {
            DeviceInitOutcome::ConfiguredWithSecret(device)
        } else {
            DeviceInitOutcome::Configured(device)
        })
    }

    /// Revokes the venue's device until its next init (SPEC §7); `None` when
    /// the venue has no such device. Scans read the device every time, so the
    /// revocation is in force for the next scan of every validator.
    #[tracing::instrument(skip_all, fields(venue = %venue_id, device = %device_id))]
    pub async fn revoke(
        &self,
        venue_id: &VenueId,
        device_id: DeviceId,
    ) -> Result<Option<Device>, StoreError> {
        let revoked = self.devices.revoke_device(venue_id, device_id).await?;
        if revoked.is_some() {
            tracing::info!("device revoked");
        }
        Ok(revoked)
    }

    pub async fn lookup(&self, lookup: &DeviceLookup) -> Result<Option<Device>, StoreError> {
        self.devices
            .device_by_mac(&lookup.venue_id, &lookup.mac)
            .await
    }

    /// `GET ticket`: the ticket's state, places and newest scans; `None` when
    /// the token is unknown or its event is at another venue
    /// ([`TicketReport::of`]).
    #[tracing::instrument(skip_all, fields(venue = %query.venue_id, limit = query.limit))]
    pub async fn ticket(&self, query: &TicketQuery) -> Result<Option<TicketReport>, StoreError> {
        let TicketHistory {
            ticket,
            event,
            state,
            scans,
        } = self
            .tickets
            .ticket_history(&query.token, query.limit)
            .await?;
        Ok(TicketReport::of(
            query,
            ticket,
            event.as_ref(),
            &state,
            scans,
        ))
    }
}
