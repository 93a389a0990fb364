//! `presence scan enter|exit|validate TOKEN`: one scan sent as a scanner
//! sends it, and its decision shown as a gate shows it (green or red, the
//! status, the message, the places). For testing a gate before doors open;
//! at a venue that requires device secrets, with the device's secret from the
//! environment or a file (never a flag, which the process list would show).

use crate::client::{ServerArgs, Terminal, http_client, refusal, result_of, secret};
use anstyle::{AnsiColor, Style};
use clap::{Args, ValueEnum};
use presence_domain::time::unix_millis;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

/// The SPEC's decision timeout is 2 s; a little more covers the network.
const SCAN_TIMEOUT: Duration = Duration::from_secs(10);

/// The environment variable holding the device secret, when no file is named.
const DEVICE_SECRET_VARIABLE: &str = "PRESENCE_DEVICE_SECRET";

/// How a scan at a venue that requires device secrets carries its device's (SPEC §7).
const DEVICE_SECRET_HEADER: &str = "X-Device-Secret";

/// Exit status of a scan the gate refuses (red), so scripts tell it apart
/// from a failure to scan at all (1).
pub const EXIT_RED: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A passage in: OKAY lets the holder in.
    Enter,
    /// A passage out: EXIT.
    Exit,
    /// A check that changes nothing: INTERNAL_SCAN when the ticket would pass.
    Validate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Os {
    #[value(name = "Printed")]
    Printed,
    #[value(name = "iOS")]
    Ios,
    #[value(name = "Android")]
    Android,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// enter, exit or validate.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The barcode or NFC token, as the scanner read it.
    pub token: String,
    /// The venue of the gate.
    #[arg(long)]
    pub venue: String,
    /// The scanning device's id (from device/init).
    #[arg(long)]
    pub device: u64,
    /// The gate's id (from device/init).
    #[arg(long)]
    pub gate: u64,
    /// The gate's name, as recorded with the scan [default: "Gate <GATE>"].
    #[arg(long)]
    pub gate_name: Option<String>,
    /// The scanning device's OS (any case).
    #[arg(long, value_enum, ignore_case = true, default_value = "Printed")]
    pub os: Os,
    /// When the scan happened, Unix milliseconds [default: now].
    #[arg(long, value_name = "MS")]
    pub scan_time: Option<i64>,
    /// Recorded with the scan in the decisions stream.
    #[arg(long)]
    pub channel: Option<String>,
    /// A file holding the scanning device's secret, for a venue that requires
    /// one (the device's init answered it); sent as X-Device-Secret [default:
    /// the PRESENCE_DEVICE_SECRET environment variable; neither: none sent].
    #[arg(long, env = "PRESENCE_DEVICE_SECRET_FILE")]
    pub device_secret_file: Option<PathBuf>,
    /// The server, and a key allowed for the venue.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the server's answer as it is (JSON), for scripts.
    #[arg(long)]
    pub json: bool,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Self::Enter => "/presence/v1/ticket/enter",
            Self::Exit => "/presence/v1/ticket/exit",
            Self::Validate => "/presence/v1/ticket/validate",
        }
    }

    /// Whether the gate shows green: the scan did what was asked.
    fn green(self, status: &str) -> bool {
        matches!(
            (self, status),
            (Self::Enter, "OKAY") | (Self::Exit, "EXIT") | (Self::Validate, "INTERNAL_SCAN")
        )
    }
}

impl Os {
    fn as_str(self) -> &'static str {
        match self {
            Self::Printed => "Printed",
            Self::Ios => "iOS",
            Self::Android => "Android",
        }
    }
}

/// Sends the scan; exits 0 on green, [`EXIT_RED`] on red, 1 when no decision
/// was made (a bad request, a refused key, no server).
pub async fn scan(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let key = args.server.api_key()?;
    let device_secret = secret(
        args.device_secret_file.as_deref(),
        DEVICE_SECRET_VARIABLE,
        "device secret",
    )?;
    let mut body = json!({
        "token": args.token,
        "venueId": args.venue,
        "deviceId": args.device,
        "gateId": args.gate,
        "gateName": args.gate_name.clone().unwrap_or_else(|| format!("Gate {}", args.gate)),
        "deviceOs": args.os.as_str(),
        "scanTime": args.scan_time.unwrap_or_else(|| unix_millis(SystemTime::now())),
    });
    if let Some(channel) = &args.channel {
        body["channelId"] = json!(channel);
    }
    let mut request = http_client(SCAN_TIMEOUT)?
        .post(args.server.endpoint(args.kind.path()))
        .header("X-Api-Key", key);
    if let Some(device_secret) = device_secret {
        request = request.header(DEVICE_SECRET_HEADER, device_secret);
    }
    let (code, text) = args.server.exchange(request.json(&body)).await?;
    if code != reqwest::StatusCode::OK {
        return Err(refusal("the scan", code, &text));
    }
    let answer: Value = serde_json::from_str(&text).unwrap_or_default();
    let green = args.kind.green(result_of(&answer).0);
    if args.json {
        println!("{text}");
    } else {
        print!("{}", show(&answer, green, Terminal::detect().colour));
    }
    Ok(if green {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RED)
    })
}

/// The decision as a gate shows it: the status on a green or red band (only
/// in `colour`; plain text says GREEN or RED), the message, then one line a
/// place.
pub fn show(answer: &Value, green: bool, colour: bool) -> String {
    let (status, message) = result_of(answer);
    let verdict = if green { "GREEN" } else { "RED" };
    let band = if colour {
        let background = if green {
            AnsiColor::Green
        } else {
            AnsiColor::Red
        };
        let style = Style::new()
            .bold()
            .fg_color(Some(AnsiColor::BrightWhite.into()))
            .bg_color(Some(background.into()));
        format!("{style}  {verdict}  {status}  {style:#}")
    } else {
        format!("{verdict} {status}")
    };
    let mut out = format!("{band} {message}\n");
    let places = answer["message"]["tickets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for ticket in places {
        out.push_str(&format!(
            "  place {}  (event {})\n",
            ticket["place"].as_str().unwrap_or(""),
            ticket["eventId"].as_str().unwrap_or("")
        ));
    }
    if let Some(scan_id) = answer["result"]["scanId"].as_str() {
        out.push_str(&format!("  scan id {scan_id}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_shows_as_a_gate_shows_it() {
        let answer = json!({
            "result": {"status": "OKAY", "message": "Okay", "scanId": "s1"},
            "message": {"tickets": [{"place": "PIT1:3:4", "eventId": "E1"}]}
        });
        assert_eq!(
            show(&answer, true, false),
            "GREEN OKAY Okay\n  place PIT1:3:4  (event E1)\n  scan id s1\n"
        );
        let coloured = show(&answer, true, true);
        assert!(coloured.starts_with("\u{1b}["), "{coloured:?}");
        assert!(coloured.contains("GREEN  OKAY"), "{coloured:?}");
        let refused = json!({
            "result": {"status": "ALREADY_ENTERED", "message": "Already entered at Gate 2"},
            "message": {"tickets": []}
        });
        assert_eq!(
            show(&refused, false, false),
            "RED ALREADY_ENTERED Already entered at Gate 2\n"
        );
    }

    #[test]
    fn green_is_what_the_scan_asked_for() {
        assert!(Kind::Enter.green("OKAY"));
        assert!(!Kind::Enter.green("EXIT"));
        assert!(Kind::Exit.green("EXIT"));
        assert!(Kind::Validate.green("INTERNAL_SCAN"));
        assert!(!Kind::Validate.green("NOT_FOUND"));
    }
}
