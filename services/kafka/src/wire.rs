//! The request and reply messages between the gateway and the services, and
//! their conversions. Everything decoded here came over the network: a bad
//! message is an error naming the field, never a panic.

use crate::KafkaError;
use presence_domain::EventId;
use presence_domain::history::MAX_HISTORY_ENTRIES;
use presence_domain::inventory::{
    InventoryRecord, LineError, LineErrors, NumberedRecord, Reference,
};
use presence_domain::{
    Device, DeviceInitRequest, DeviceLookup, GateId, GateRef, Mac, TicketQuery, TicketReport,
    Token, VenueId, VenueStats,
};
use presence_ports::{DeviceInitOutcome, InventoryOutcome};
use presence_proto::pb;
use presence_proto::pb::registry_reply::Outcome as RegistryOutcome;

fn bad(what: &str) -> KafkaError {
    KafkaError::Decode(what.to_owned())
}

fn mac(text: &str) -> Result<Mac, KafkaError> {
    Mac::parse(text).ok_or_else(|| bad("mac is not a MAC address"))
}

pub fn device_init_to_pb(request: &DeviceInitRequest) -> pb::DeviceInit {
    pb::DeviceInit {
        venue_id: request.venue_id.to_string(),
        name: request.name.clone(),
        mac: request.mac.to_string(),
        ip: request.ip.to_string(),
        gate: Some(match &request.gate {
            GateRef::Name(name) => pb::device_init::Gate::GateName(name.clone()),
            GateRef::Id(id) => pb::device_init::Gate::GateId(id.get()),
        }),
        serial: request.serial.clone(),
        model: request.model.clone(),
        secret_candidate: request
            .secret_candidate
            .as_ref()
            .map_or_else(Vec::new, |digest| digest.as_bytes().to_vec()),
    }
}

pub fn device_init_from_pb(message: pb::DeviceInit) -> Result<DeviceInitRequest, KafkaError> {
    Ok(DeviceInitRequest {
        venue_id: VenueId::new(message.venue_id),
        name: message.name,
        mac: mac(&message.mac)?,
        ip: message
            .ip
            .parse()
            .map_err(|_| bad("ip is not an IP address"))?,
        gate: match message.gate.ok_or_else(|| bad("gate is missing"))? {
            pb::device_init::Gate::GateName(name) => GateRef::Name(name),
            pb::device_init::Gate::GateId(id) => GateRef::Id(GateId::new(id)),
        },
        serial: message.serial,
        model: message.model,
        secret_candidate: presence_proto::secret_digest_from_pb(&message.secret_candidate)
            .map_err(|_| bad("secret_candidate is not a 32-byte digest"))?,
    })
}

pub fn lookup_to_pb(lookup: &DeviceLookup) -> pb::DeviceLookup {
    pb::DeviceLookup {
        venue_id: lookup.venue_id.to_string(),
        mac: lookup.mac.to_string(),
    }
}

pub fn lookup_from_pb(message: pb::DeviceLookup) -> Result<DeviceLookup, KafkaError> {
    Ok(DeviceLookup {
        venue_id: VenueId::new(message.venue_id),
        mac: mac(&message.mac)?,
    })
}

pub fn init_outcome_to_pb(outcome: &DeviceInitOutcome) -> pb::RegistryReply {
    let outcome = match outcome {
        DeviceInitOutcome::Configured(device) => RegistryOutcome::Device(pb::Device::from(device)),
        DeviceInitOutcome::ConfiguredWithSecret(device) => {
            RegistryOutcome::DeviceWithSecret(pb::Device::from(device))
        }
        DeviceInitOutcome::VenueNotFound => RegistryOutcome::VenueNotFound(true),
        DeviceInitOutcome::UnknownGate(id) => RegistryOutcome::UnknownGate(id.get()),
        DeviceInitOutcome::TooManyGates(cap) => RegistryOutcome::TooManyGates(*cap),
        DeviceInitOutcome::TooManyDevices(cap) => RegistryOutcome::TooManyDevices(*cap),
    };
    pb::RegistryReply {
        outcome: Some(outcome),
    }
}

pub fn init_outcome_from_pb(reply: pb::RegistryReply) -> Result<DeviceInitOutcome, KafkaError> {
    match reply
        .outcome
        .ok_or_else(|| bad("registry reply is empty"))?
    {
        RegistryOutcome::Device(device) => Ok(DeviceInitOutcome::Configured(
            Device::try_from(device).map_err(|e| bad(&e.to_string()))?,
        )),
        RegistryOutcome::DeviceWithSecret(device) => Ok(DeviceInitOutcome::ConfiguredWithSecret(
            Device::try_from(device).map_err(|e| bad(&e.to_string()))?,
        )),
        RegistryOutcome::VenueNotFound(_) => Ok(DeviceInitOutcome::VenueNotFound),
        RegistryOutcome::UnknownGate(id) => Ok(DeviceInitOutcome::UnknownGate(GateId::new(id))),
        RegistryOutcome::TooManyGates(cap) => Ok(DeviceInitOutcome::TooManyGates(cap)),
        RegistryOutcome::TooManyDevices(cap) => Ok(DeviceInitOutcome::TooManyDevices(cap)),
        RegistryOutcome::DeviceNotFound(_) => Err(bad("a lookup answer to a device init")),
        RegistryOutcome::VenueStats(_) => Err(bad("a stats answer to a device init")),
        RegistryOutcome::Ticket(_) | RegistryOutcome::TicketNotFound(_) => {
            Err(bad("a ticket answer to a device init"))
        }
    }
}

pub fn lookup_outcome_to_pb(found: Option<&Device>) -> pb::RegistryReply {
    let outcome = match found {
        Some(device) => RegistryOutcome::Device(pb::Device::from(device)),
        None => RegistryOutcome::DeviceNotFound(true),
    };
    pb::RegistryReply {
        outcome: Some(outcome),
    }
}

pub fn lookup_outcome_from_pb(reply: pb::RegistryReply) -> Result<Option<Device>, KafkaError> {
    match reply
        .outcome
        .ok_or_else(|| bad("registry reply is empty"))?
    {
        RegistryOutcome::Device(device) => Ok(Some(
            Device::try_from(device).map_err(|e| bad(&e.to_string()))?,
        )),
        RegistryOutcome::DeviceNotFound(_) => Ok(None),
        RegistryOutcome::DeviceWithSecret(_)
        | RegistryOutcome::VenueNotFound(_)
        | RegistryOutcome::UnknownGate(_)
        | RegistryOutcome::TooManyGates(_)
        | RegistryOutcome::TooManyDevices(_) => Err(bad("a device init answer to a lookup")),
        RegistryOutcome::VenueStats(_) => Err(bad("a stats answer to a lookup")),
        RegistryOutcome::Ticket(_) | RegistryOutcome::TicketNotFound(_) => {
            Err(bad("a ticket answer to a device lookup"))
        }
    }
}

/// A venue's stats, or `None` for an unknown venue.
pub fn stats_outcome_to_pb(found: Option<&VenueStats>) -> pb::RegistryReply {
    let outcome = match found {
        Some(stats) => RegistryOutcome::VenueStats(stats.into()),
        None => RegistryOutcome::VenueNotFound(true),
    };
    pb::RegistryReply {
        outcome: Some(outcome),
    }
}

pub fn stats_outcome_from_pb(reply: pb::RegistryReply) -> Result<Option<VenueStats>, KafkaError> {
    match reply
        .outcome
        .ok_or_else(|| bad("registry reply is empty"))?
    {
        RegistryOutcome::VenueStats(stats) => Ok(Some(
            VenueStats::try_from(stats).map_err(|e| bad(&e.to_string()))?,
        )),
        RegistryOutcome::VenueNotFound(_) => Ok(None),
        RegistryOutcome::Device(_)
        | RegistryOutcome::DeviceWithSecret(_)
        | RegistryOutcome::UnknownGate(_)
        | RegistryOutcome::TooManyGates(_)
        | RegistryOutcome::TooManyDevices(_)
        | RegistryOutcome::DeviceNotFound(_) => Err(bad("a device answer to a stats query")),
        RegistryOutcome::Ticket(_) | RegistryOutcome::TicketNotFound(_) => {
            Err(bad("a ticket answer to a stats query"))
        }
    }
}

pub fn ticket_query_to_pb(query: &TicketQuery) -> pb::TicketQuery {
    pb::TicketQuery {
        venue_id: query.venue_id.to_string(),
        token: query.token.to_string(),
        limit: u32::try_from(query.limit).unwrap_or(u32::MAX),
    }
}

/// The query, its limit brought into 1..=[`MAX_HISTORY_ENTRIES`].
pub fn ticket_query_from_pb(message: pb::TicketQuery) -> Result<TicketQuery, KafkaError> {
    if message.venue_id.is_empty() || message.token.is_empty() {
        return Err(bad("a ticket query names no venue or no token"));
    }
    let limit = usize::try_from(message.limit).unwrap_or(MAX_HISTORY_ENTRIES);
    Ok(TicketQuery {
        venue_id: VenueId::new(message.venue_id),
        token: Token::new(message.token),
        limit: limit.clamp(1, MAX_HISTORY_ENTRIES),
    })
}

/// A ticket's report, or `None` for an unknown token or another venue's ticket.
pub fn ticket_outcome_to_pb(found: Option<&TicketReport>) -> pb::RegistryReply {
    let outcome = match found {
        Some(report) => RegistryOutcome::Ticket(report.into()),
        None => RegistryOutcome::TicketNotFound(true),
    };
    pb::RegistryReply {
        outcome: Some(outcome),
    }
}

pub fn ticket_outcome_from_pb(
    reply: pb::RegistryReply,
) -> Result<Option<TicketReport>, KafkaError> {
    match reply
        .outcome
        .ok_or_else(|| bad("registry reply is empty"))?
    {
        RegistryOutcome::Ticket(report) => Ok(Some(
            TicketReport::try_from(report).map_err(|e| bad(&e.to_string()))?,
        )),
        RegistryOutcome::TicketNotFound(_) => Ok(None),
        _ => Err(bad("not a ticket answer to a ticket query")),
    }
}

fn line(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

fn line_from(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// The listed bad lines, and how many there are in all.
pub fn line_errors_to_pb(errors: &LineErrors) -> (Vec<pb::LineError>, u64) {
    let listed = errors
        .listed()
        .iter()
        .map(|e| {
            let mut message = pb::LineError {
                line: line(e.line),
                error: e.error.clone(),
                ..Default::default()
            };
            for reference in &e.unchecked {
                match reference {
                    Reference::Venue(id) => message.unchecked_venue_ids.push(id.to_string()),
                    Reference::Event(id) => message.unchecked_event_ids.push(id.to_string()),
                }
            }
            message
        })
        .collect();
    (listed, line(errors.total()))
}

/// The bad lines sent by [`line_errors_to_pb`] (kept to the listing limit,
/// whoever sent them).
pub fn line_errors_from_pb(errors: Vec<pb::LineError>, total: u64) -> LineErrors {
    let listed = errors
        .into_iter()
        .map(|e| LineError {
            unchecked: e
                .unchecked_venue_ids
                .into_iter()
                .map(|id| Reference::Venue(VenueId::new(id)))
                .chain(
                    e.unchecked_event_ids
                        .into_iter()
                        .map(|id| Reference::Event(EventId::new(id))),
                )
                .collect(),
            ..LineError::new(line_from(e.line), e.error)
        })
        .collect();
    LineErrors::from_parts(listed, line_from(total))
}

pub fn records_to_pb(records: &[NumberedRecord]) -> Vec<pb::NumberedRecord> {
    records
        .iter()
        .map(|r| pb::NumberedRecord {
            line: line(r.line),
            record: Some(pb::InventoryRecord::from(&r.record)),
        })
        .collect()
}

/// Records of a chunk; one that is not a valid record becomes a line error, so a
/// bad upstream record rejects its batch like a bad NDJSON line would.
pub fn records_from_pb(records: Vec<pb::NumberedRecord>) -> (Vec<NumberedRecord>, LineErrors) {
    let mut good = Vec::with_capacity(records.len());
    let mut errors = Vec::new();
    let mut total = 0;
    for numbered in records {
        let line = line_from(numbered.line);
        match numbered.record.map(InventoryRecord::try_from) {
            Some(Ok(record)) => good.push(NumberedRecord { line, record }),
            Some(Err(error)) => {
                total += 1;
                errors.push(LineError::new(line, error.to_string()));
            }
            None => {
                total += 1;
                errors.push(LineError::new(line, "record is missing"));
            }
        }
    }
    (good, LineErrors::from_parts(errors, total))
}

pub fn inventory_outcome_to_pb(outcome: &InventoryOutcome) -> pb::InventoryReply {
    match outcome {
        InventoryOutcome::Applied(count) => pb::InventoryReply {
            applied: line(*count),
            ..Default::default()
        },
        InventoryOutcome::Rejected(errors) => {
            let (errors, error_count) = line_errors_to_pb(errors);
            pb::InventoryReply {
                applied: 0,
                errors,
                error_count,
            }
        }
    }
}

pub fn inventory_outcome_from_pb(reply: pb::InventoryReply) -> InventoryOutcome {
    if reply.errors.is_empty() {
        InventoryOutcome::Applied(line_from(reply.applied))
    } else {
        InventoryOutcome::Rejected(line_errors_from_pb(reply.errors, reply.error_count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_domain::inventory::parse_ndjson;
    use presence_domain::stats::{MINUTE_MS, minute_of};
    use presence_domain::{DeviceActivity, DeviceId};

    fn init() -> DeviceInitRequest {
        DeviceInitRequest {
            venue_id: VenueId::new("V"),
            name: "n".into(),
            mac: Mac::parse("00:00:00:00:00:0a").unwrap(),
            ip: "fe80::1".parse().unwrap(),
            gate: GateRef::Name("North".into()),
            serial: "s".into(),
            model: "m".into(),
            secret_candidate: Some(presence_domain::SecretDigest::of("s3cret")),
        }
    }

    #[test]
    fn registry_messages_round_trip() {
        let request = init();
        assert_eq!(
            device_init_from_pb(device_init_to_pb(&request)).unwrap(),
            request
        );
        let by_id = DeviceInitRequest {
            gate: GateRef::Id(GateId::new(7)),
            ..init()
        };
        assert_eq!(
            device_init_from_pb(device_init_to_pb(&by_id)).unwrap(),
            by_id
        );
        let device = Device {
            id: DeviceId::new(3),
            venue_id: VenueId::new("V"),
            name: "n".into(),
            mac: Mac::parse("00:00:00:00:00:0A").unwrap(),
            ip: "fe80::1".into(),
            gate_id: GateId::new(7),
            gate_name: "North".into(),
            serial: "s".into(),
            model: "m".into(),
            access: Default::default(),
        };
        for outcome in [
            DeviceInitOutcome::Configured(device.clone()),
            DeviceInitOutcome::ConfiguredWithSecret(device.clone()),
            DeviceInitOutcome::VenueNotFound,
            DeviceInitOutcome::UnknownGate(GateId::new(9)),
            DeviceInitOutcome::TooManyGates(1_000),
            DeviceInitOutcome::TooManyDevices(10_000),
        ] {
            assert_eq!(
                init_outcome_from_pb(init_outcome_to_pb(&outcome)).unwrap(),
                outcome
            );
        }
        assert_eq!(
            lookup_outcome_from_pb(lookup_outcome_to_pb(Some(&device))).unwrap(),
            Some(device)
        );
        assert_eq!(
            lookup_outcome_from_pb(lookup_outcome_to_pb(None)).unwrap(),
            None
        );
    }

    /// Everything the board reads travels: counts (forced ones too), the
    /// gates' entries per minute, the scanners' last scans, whether doors
    /// are open.
    #[test]
    fn stats_round_trip() {
        let now = 1_480_003_200_042;
        let this_minute = minute_of(now);
        let mut stats = VenueStats::from_fields(
            VenueId::new("V"),
            Some(now),
            [
                ("t|entries", 3),
                ("t|forced", 1),
                ("t|denied:NOT_FOUND", 1),
                ("g:2|entries", 3),
                ("g:2|forced", 1),
                ("g:2|denied:NOT_FOUND", 1),
                ("e:E|exits", 1),
            ],
            [(GateId::new(2), "North".to_owned())],
        )
        .unwrap()
        .with_minutes(
            now,
            [
                (GateId::new(2), this_minute, 2),
                (GateId::new(2), this_minute - 7 * MINUTE_MS, 1),
            ],
        )
        .with_devices([
            DeviceActivity {
                device_id: DeviceId::new(5),
                gate_id: GateId::new(2),
                last_scan_at: now,
            },
            DeviceActivity {
                device_id: DeviceId::new(6),
                gate_id: GateId::new(2),
                last_scan_at: now - 300_000,
            },
        ]);
        stats.doors_open = true;
        assert_eq!(stats.gates[0].entries_by_minute.len(), 2);
        assert_eq!(
            stats_outcome_from_pb(stats_outcome_to_pb(Some(&stats))).unwrap(),
            Some(stats)
        );
        assert_eq!(
            stats_outcome_from_pb(stats_outcome_to_pb(None)).unwrap(),
            None
        );
    }

    #[test]
    fn inventory_messages_round_trip_with_their_lines() {
        let (records, _) = parse_ndjson("\n{\"type\":\"venue\",\"id\":\"V\",\"name\":\"A\"}\n");
        let (back, errors) = records_from_pb(records_to_pb(&records));
        assert_eq!((back, errors), (records, LineErrors::default()));
        let (_, errors) = records_from_pb(vec![pb::NumberedRecord {
            line: 4,
            record: None,
        }]);
        assert_eq!((errors.listed()[0].line, errors.total()), (4, 1));
        let rejected = InventoryOutcome::Rejected(LineErrors::from_parts(
            vec![
                LineError::new(2, "bad"),
                LineError {
                    unchecked: vec![
                        Reference::Venue(VenueId::new("V")),
                        Reference::Event(EventId::new("E")),
                    ],
                    ..LineError::new(3, "places must list 1 to 100 non-empty places")
                },
            ],
            250,
        ));
        assert_eq!(
            inventory_outcome_from_pb(inventory_outcome_to_pb(&rejected)),
            rejected
        );
        let applied = InventoryOutcome::Applied(5);
        assert_eq!(
            inventory_outcome_from_pb(inventory_outcome_to_pb(&applied)),
            applied
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(device_init_from_pb(pb::DeviceInit::default()).is_err());
        assert!(init_outcome_from_pb(pb::RegistryReply::default()).is_err());
        assert!(lookup_from_pb(pb::DeviceLookup::default()).is_err());
    }
}
