//! What every path needs before its first scan: the plan's inventory applied
//! and its scanner configured, through the services' own code (the validator's
//! inventory applier, the registry's device/init).

use crate::plan::{GATE_NAME, Plan, Scanner, VENUE};
use anyhow::{Context, Result, bail};
use presence_domain::inventory::parse_ndjson;
use presence_domain::{DeviceInitRequest, GateRef, Mac, VenueId};
use presence_ports::{DeviceInitOutcome, InventoryOutcome, Stores};
use presence_registry::{Registry, VenueCaps};
use presence_validator::InventoryApplier;
use std::net::{IpAddr, Ipv4Addr};

/// Applies the plan's inventory to `stores` and configures its scanner.
pub async fn prepare(stores: &Stores, plan: &Plan) -> Result<Scanner> {
    let (records, syntax_errors) = parse_ndjson(&plan.inventory());
    if !syntax_errors.is_empty() {
        bail!(
            "the plan's inventory has {} bad lines",
            syntax_errors.total()
        );
    }
    match InventoryApplier::new(stores)
        .apply(records, syntax_errors)
        .await
        .context("applying the inventory")?
    {
        InventoryOutcome::Applied(_) => {}
        InventoryOutcome::Rejected(errors) => {
            bail!("the inventory was rejected: {} bad lines", errors.total())
        }
    }
    let init = DeviceInitRequest {
        venue_id: VenueId::new(VENUE),
        name: "instruction counter".to_owned(),
        mac: Mac::parse("02:00:00:00:00:01").context("the scanner's MAC")?,
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        gate: GateRef::Name(GATE_NAME.to_owned()),
        serial: "IC1".to_owned(),
        model: "presence-instructions".to_owned(),
        secret_candidate: None,
    };
    match Registry::new(stores, VenueCaps::default())
        .init(init)
        .await
        .context("configuring the scanner")?
    {
        DeviceInitOutcome::Configured(device) | DeviceInitOutcome::ConfiguredWithSecret(device) => {
            Ok(Scanner {
                device_id: device.id,
                gate_id: device.gate_id,
            })
        }
        other => bail!("device/init refused the scanner: {other:?}"),
    }
}
