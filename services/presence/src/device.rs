//! `presence device init` and `presence device show`: a scanning device
//! configured at a venue's gate (SPEC §2 `device/init`), or looked up by its
//! MAC, over the public API, so that a gate can be set up and tested from a
//! shell with `presence scan` from the device it prints. At a venue that
//! requires device secrets, init prints the new secret once, as the server
//! answers it once.

use crate::client::{ServerArgs, http_client};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::Duration;

const DEVICE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Configure a scanning device at a venue's gate (device/init), and print
    /// its id, its gate's id and how to scan from it.
    ///
    /// Initialising the same MAC at the venue again keeps the device's id and
    /// updates the rest. At a venue that requires device secrets the answer
    /// holds the device's new secret, printed once here (the server keeps only
    /// its hash, and the previous secret stops working).
    ///
    /// Exit status: 0 configured, 1 not (refused, with what to do next, or no
    /// server).
    Init(InitArgs),
    /// Show a configured device, looked up by its MAC at a venue.
    ///
    /// Exit status: 0 found, 1 not (no such device, a refused key, no server).
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The venue the device scans at.
    #[arg(long)]
    pub venue: String,
    /// The device's MAC address (six hex pairs, with `:` or `-`): who the
    /// device is at the venue.
    #[arg(long)]
    pub mac: String,
    /// The gate's name; a gate of that name is created at the venue on first
    /// use (names match trimmed and in any case).
    #[arg(long, required_unless_present = "gate")]
    pub gate_name: Option<String>,
    /// The id of an existing gate of the venue, instead of --gate-name.
    #[arg(long, conflicts_with = "gate_name")]
    pub gate: Option<u64>,
    /// The device's name.
    #[arg(long, default_value = "Test scanner")]
    pub name: String,
    /// The device's IP address, as recorded.
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: String,
    /// The device's serial number [default: its MAC].
    #[arg(long)]
    pub serial: Option<String>,
    /// The device's model.
    #[arg(long, default_value = "presence CLI")]
    pub model: String,
    /// The server, and a key allowed for the venue.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the server's answer as it is (JSON), for scripts; it holds the
    /// device secret when one is issued.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The venue the device scans at.
    #[arg(long)]
    pub venue: String,
    /// The device's MAC address, in any of the forms init takes.
    #[arg(long)]
    pub mac: String,
    /// The server, and a key allowed for the venue.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the server's answer as it is (JSON), for scripts.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: DeviceCommand) -> anyhow::Result<ExitCode> {
    match command {
        DeviceCommand::Init(args) => init(args).await,
        DeviceCommand::Show(args) => show(args).await,
    }
}

async fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let key = args.server.api_key()?;
    let mut body = json!({
        "venueId": args.venue,
        "name": args.name,
        "mac": args.mac,
        "ip": args.ip,
        "serial": args.serial.as_deref().unwrap_or(&args.mac),
        "model": args.model,
    });
    // clap requires one of them, and not both.
    if let Some(name) = &args.gate_name {
        body["gateName"] = json!(name);
    } else if let Some(id) = args.gate {
        body["gateId"] = json!(id);
    }
    let request = http_client(DEVICE_TIMEOUT)?
        .post(args.server.endpoint("/presence/v1/device/init"))
        .header("X-Api-Key", key)
        .json(&body);
    let text = args.server.accepted(request, "the device init").await?;
    print_device(&text, args.json, "configured ");
    Ok(ExitCode::SUCCESS)
}

async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let key = args.server.api_key()?;
    let request = http_client(DEVICE_TIMEOUT)?
        .get(args.server.endpoint("/presence/v1/device"))
        .query(&[("venue", args.venue.as_str()), ("mac", args.mac.as_str())])
        .header("X-Api-Key", key);
    let text = args.server.accepted(request, "the device lookup").await?;
    print_device(&text, args.json, "");
    Ok(ExitCode::SUCCESS)
}

fn print_device(text: &str, json: bool, verb: &str) {
    if json {
        println!("{text}");
    } else {
        let answer: Value = serde_json::from_str(text).unwrap_or_default();
        print!("{verb}{}", describe(&answer["message"]));
    }
}

/// A device (a device/init or lookup `message`) for a person: who and where
/// it is, the `presence scan` command that scans from it, and its secret when
/// the answer holds one.
pub fn describe(device: &Value) -> String {
    let text = |field: &str| device[field].as_str().unwrap_or_default().to_owned();
    let (id, gate_id) = (&device["id"], &device["gateId"]);
    let mut out = format!(
        "device {id} {:?} ({}) at venue {}, gate {gate_id} {:?}\n",
        text("name"),
        text("mac"),
        text("venueId"),
        text("gateName"),
    );
    out.push_str(&format!(
        "  scan from it: presence scan enter TOKEN --venue {} --device {id} --gate {gate_id} --gate-name {}\n",
        shell_word(&text("venueId")),
        shell_word(&text("gateName")),
    ));
    if let Some(secret) = device["deviceSecret"].as_str() {
        out.push_str(&format!(
            "  device secret: {secret}\n  (shown this once: the scanner sends it as X-Device-Secret, \
             and presence scan takes it from PRESENCE_DEVICE_SECRET or --device-secret-file)\n"
        ));
    }
    out
}

/// `word` as one word of a POSIX shell command, quoted only when it must be.
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@%+=,".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_reads_with_the_scan_command_and_its_secret_once() {
        let device = json!({
            "id": 7, "venueId": "KovZpZAnAtJJ", "name": "North 1", "mac": "00:00:00:00:00:01",
            "ip": "10.0.0.1", "gateId": 3, "gateName": "Gate 2", "serial": "S1", "model": "TC52"
        });
        assert_eq!(
            describe(&device),
            "device 7 \"North 1\" (00:00:00:00:00:01) at venue KovZpZAnAtJJ, gate 3 \"Gate 2\"\n  \
             scan from it: presence scan enter TOKEN --venue KovZpZAnAtJJ --device 7 --gate 3 \
             --gate-name 'Gate 2'\n"
        );
        let mut strict = device;
        strict["deviceSecret"] = json!("0123456789abcdef0123456789abcdef");
        let text = describe(&strict);
        assert!(
            text.contains("  device secret: 0123456789abcdef0123456789abcdef\n"),
            "{text}"
        );
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("DEMO-ARENA"), "DEMO-ARENA");
        assert_eq!(shell_word("VIP Gate"), "'VIP Gate'");
        assert_eq!(shell_word("Rick's"), r"'Rick'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
