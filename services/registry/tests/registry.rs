//! The registry against the embedded store.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup should fail the test loudly

use presence_domain::inventory::{InventoryRecord, Venue};
use presence_domain::{DeviceInitRequest, DeviceLookup, GateId, GateRef, Mac, VenueId};
use presence_ports::{DeviceInitOutcome, Stores};
use presence_registry::{Registry, VenueCaps};
use presence_store_embedded::{EmbeddedOptions, EmbeddedStore};

async fn registry() -> (tempfile::TempDir, Registry) {
    registry_with(VenueCaps::default()).await
}

async fn registry_with(caps: VenueCaps) -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let stores =
        Stores::from_backend(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let venues = ["V1", "V2"].map(|id| {
        InventoryRecord::Venue(Venue {
            id: VenueId::new(id),
            name: id.into(),
            require_device_secret: false,
        })
    });
    stores.inventory.apply(venues.to_vec()).await.unwrap();
    (dir, Registry::new(&stores, caps))
}

fn request(venue: &str, mac: &str, gate: GateRef) -> DeviceInitRequest {
    DeviceInitRequest {
        venue_id: VenueId::new(venue),
        name: "Scanner".into(),
        mac: Mac::parse(mac).unwrap(),
        ip: "fe80::1".parse().unwrap(),
        gate,
        serial: "SN".into(),
        model: "XT2".into(),
        secret_candidate: None,
    }
}

fn configured(outcome: DeviceInitOutcome) -> presence_domain::Device {
    match outcome {
        DeviceInitOutcome::Configured(device) => device,
        other => panic!("expected a configured device, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_venue_is_not_found() {
    let (_dir, registry) = registry().await;
    let outcome = registry
        .init(request(
            "NOPE",
            "00:00:00:00:00:01",
            GateRef::Name("G".into()),
        ))
        .await
        .unwrap();
    assert_eq!(outcome, DeviceInitOutcome::VenueNotFound);
}

#[tokio::test]
async fn gate_by_id_must_belong_to_the_venue() {
    let (_dir, registry) = registry().await;
    let first = configured(
        registry
            .init(request(
                "V1",
                "00:00:00:00:00:01",
                GateRef::Name("North".into()),
            ))
            .await
            .unwrap(),
    );
    let by_id = configured(
        registry
            .init(request(
                "V1",
                "00:00:00:00:00:02",
                GateRef::Id(first.gate_id),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(
        (by_id.gate_id, by_id.gate_name.as_str()),
        (first.gate_id, "North")
    );
    let elsewhere = registry
        .init(request(
            "V2",
            "00:00:00:00:00:03",
            GateRef::Id(first.gate_id),
        ))
        .await
        .unwrap();
    assert_eq!(elsewhere, DeviceInitOutcome::UnknownGate(first.gate_id));
    let unknown = registry
        .init(request(
            "V1",
            "00:00:00:00:00:04",
            GateRef::Id(GateId::new(999)),
        ))
        .await
        .unwrap();
    assert_eq!(unknown, DeviceInitOutcome::UnknownGate(GateId::new(999)));
}

#[tokio::test]
async fn re_init_keeps_the_id_and_lookup_finds_the_latest() {
    let (_dir, registry) = registry().await;
    let first = configured(
        registry
            .init(request(
                "V1",
                "00-00-00-00-00-0a",
                GateRef::Name("North".into()),
            ))
            .await
            .unwrap(),
    );
    let again = configured(
        registry
            .init(request(
                "V1",
                "00:00:00:00:00:0A",
                GateRef::Name(" SOUTH ".into()),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(first.id, again.id);
    assert_ne!(first.gate_id, again.gate_id);
    assert_eq!(again.ip, "fe80::1");
    let found = registry
        .lookup(&DeviceLookup::parse(Some("V1"), None, Some("00:00:00:00:00:0a")).unwrap())
        .await
        .unwrap();
    assert_eq!(found, Some(again));
    let other_venue = registry
        .lookup(&DeviceLookup::parse(Some("V2"), None, Some("00:00:00:00:00:0A")).unwrap())
        .await
        .unwrap();
    assert_eq!(other_venue, None);
}

#[tokio::test]
async fn venue_caps_refuse_new_gates_and_devices_but_never_a_reinit() {
    let (_dir, registry) = registry_with(VenueCaps {
        max_gates: 2,
        max_devices: 2,
    })
    .await;
    let init = |venue: &str, mac: &str, gate: &str| {
        registry.init(request(venue, mac, GateRef::Name(gate.into())))
    };
    let first = configured(init("V1", "00:00:00:00:00:01", "North").await.unwrap());
    configured(init("V1", "00:00:00:00:00:02", "South").await.unwrap());
    assert_eq!(
        init("V1", "00:00:00:00:00:01", "East").await.unwrap(),
        DeviceInitOutcome::TooManyGates(2),
        "a third gate name"
    );
    assert_eq!(
        init("V1", "00:00:00:00:00:03", "North").await.unwrap(),
        DeviceInitOutcome::TooManyDevices(2),
        "a third MAC"
    );
    let again = configured(init("V1", "00:00:00:00:00:01", "ＳＯＵＴＨ").await.unwrap());
    assert_eq!(
        again.id, first.id,
        "a re-init at a known gate is never refused"
    );
    assert_eq!(
        again.gate_name, "South",
        "the stored name of the look-alike gate"
    );
    configured(init("V2", "00:00:00:00:00:03", "East").await.unwrap());
}
