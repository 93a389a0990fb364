//! The device registry: device/init and device lookup.
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

use presence_domain::{Device, DeviceInitRequest, DeviceLookup, GateRef};
use presence_ports::{DeviceDraft, DeviceInitOutcome, DeviceStore, StoreError, Stores};
use std::sync::Arc;

/// Configures and finds devices. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    devices: Arc<dyn DeviceStore>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(stores: &Stores) -> Self {
        Self {
            devices: stores.devices.clone(),
        }
    }

    #[tracing::instrument(skip_all, fields(venue = %request.venue_id, mac = %request.mac))]
    pub async fn init(&self, request: DeviceInitRequest) -> Result<DeviceInitOutcome, StoreError> {
        if self.devices.venue(&request.venue_id).await?.is_none() {
            return Ok(DeviceInitOutcome::VenueNotFound);
        }
        let gate = match &request.gate {
            GateRef::Name(name) => self.devices.ensure_gate(&request.venue_id, name).await?,
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
        };
        let device = self.devices.save_device(draft).await?;
        tracing::info!(device = %device.id, gate = %device.gate_id, "device configured");
        Ok(DeviceInitOutcome::Configured(device))
    }

    pub async fn lookup(&self, lookup: &DeviceLookup) -> Result<Option<Device>, StoreError> {
        self.devices
            .device_by_mac(&lookup.venue_id, &lookup.mac)
            .await
    }
}
