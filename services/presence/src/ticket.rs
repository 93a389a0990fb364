//! `presence ticket TOKEN --venue V`: a ticket's state and history as a table,
//! from `GET /presence/v1/ticket?venueId=&token=` (SPEC §6, "what happened to
//! this ticket").

use crate::client::{ServerArgs, http_client};
use clap::Args;
use presence_domain::time::iso8601;
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct TicketArgs {
    /// The ticket's token (barcode or NFC token, without a rotating code).
    pub token: String,
    /// The venue whose event the ticket is for.
    #[arg(long)]
    pub venue: String,
    /// Most scans to list, newest first (the server allows 1 to 500).
    #[arg(long, default_value_t = 50)]
    pub limit: u16,
    /// The server, and a key allowed for the venue.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the server's answer as it is (JSON), for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Prints the ticket; exits 1 when the server does not know it at this venue.
pub async fn ticket(args: TicketArgs) -> anyhow::Result<ExitCode> {
    let key = args.server.api_key()?;
    let request = http_client(LOOKUP_TIMEOUT)?
        .get(args.server.endpoint("/presence/v1/ticket"))
        .query(&[
            ("venueId", args.venue.as_str()),
            ("token", args.token.as_str()),
            ("limit", &args.limit.to_string()),
        ])
        .header("X-Api-Key", key);
    let text = args.server.accepted(request, "the ticket lookup").await?;
    if args.json {
        println!("{text}");
    } else {
        let answer: Value = serde_json::from_str(&text).unwrap_or_default();
        print!("{}", table(&answer["message"]));
    }
    Ok(ExitCode::SUCCESS)
}

fn cell(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The ticket (token, event, places, status, state), then one row a scan,
/// newest first, in aligned columns.
pub fn table(ticket: &Value) -> String {
    let places = ticket["places"]
        .as_array()
        .map(|places| places.iter().map(cell).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    let mut out = format!(
        "ticket {}  event {}  places {places}\nstatus {}  state {}\n",
        cell(&ticket["token"]),
        cell(&ticket["eventId"]),
        cell(&ticket["status"]),
        cell(&ticket["state"]),
    );
    let scans = ticket["scans"].as_array().cloned().unwrap_or_default();
    if scans.is_empty() {
        out.push_str("no scans\n");
        return out;
    }
    let header = [
        "scan time",
        "kind",
        "status",
        "gate",
        "device",
        "flags",
        "message",
    ];
    let rows: Vec<[String; 7]> = scans
        .iter()
        .map(|scan| {
            let flags: Vec<&str> = [
                ("offline", "offline"),
                ("forced", "forced"),
                ("annulled", "annulled"),
            ]
            .into_iter()
            .filter(|(field, _)| scan[*field] == true)
            .map(|(_, flag)| flag)
            .collect();
            [
                scan["scanTime"].as_i64().map(iso8601).unwrap_or_default(),
                cell(&scan["kind"]),
                cell(&scan["status"]),
                format!("{} {}", cell(&scan["gateId"]), cell(&scan["gateName"])),
                cell(&scan["deviceId"]),
                flags.join(","),
                cell(&scan["message"]),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, value) in widths.iter_mut().zip(row) {
            *width = (*width).max(value.chars().count());
        }
    }
    let line = |values: &[String]| {
        let mut text = values
            .iter()
            .zip(widths)
            .map(|(value, width)| format!("{value:<width$}"))
            .collect::<Vec<_>>()
            .join("  ");
        text.truncate(text.trim_end().len());
        text + "\n"
    };
    out.push_str(&line(&header.map(str::to_owned)));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The SPEC §6 lookup answer's `message`, as the endpoint documents it.
    #[test]
    fn a_ticket_and_its_scans_read_as_a_table_newest_first() {
        let ticket = json!({
            "token": "721744537954", "eventId": "E1", "places": ["PIT1:3:4", "PIT1:3:5"],
            "status": "VALID", "state": "IN",
            "scans": [
                {"scanId": "s2", "kind": "enter", "status": "OKAY", "message": "Okay",
                 "gateId": 2, "gateName": "Gate 2", "deviceId": 7, "scanTime": 1_480_003_260_000_i64,
                 "decidedAt": 1_480_003_260_004_i64, "offline": true, "forced": true, "annulled": false},
                {"scanId": "s1", "kind": "exit", "status": "INVALID_TICKET", "message": "Ticket is not entered",
                 "gateId": 10, "gateName": "North", "deviceId": 12, "scanTime": 1_480_003_200_000_i64,
                 "decidedAt": 1_480_003_200_002_i64, "offline": false, "forced": false, "annulled": false}
            ]
        });
        assert_eq!(
            table(&ticket),
            "ticket 721744537954  event E1  places PIT1:3:4, PIT1:3:5\n\
             status VALID  state IN\n\
             scan time             kind   status          gate      device  flags           message\n\
             2016-11-24T16:01:00Z  enter  OKAY            2 Gate 2  7       offline,forced  Okay\n\
             2016-11-24T16:00:00Z  exit   INVALID_TICKET  10 North  12                      Ticket is not entered\n"
        );
        let unscanned = json!({"token": "T", "eventId": "E", "places": [], "status": "VALID", "state": "NEVER", "scans": []});
        assert!(table(&unscanned).ends_with("state NEVER\nno scans\n"));
    }
}
