//! Inventory files: read, parse and check NDJSON without a server.

use crate::progress::FileProgress;
use anyhow::Context;
use presence_domain::inventory::{
    InventoryRecord, LineErrors, NdjsonParser, NumberedRecord, check_references, parse_ndjson,
};
use std::io::Read;
use std::path::Path;

/// Bytes read and parsed at a time by [`check_file`].
const CHUNK_BYTES: usize = 256 * 1024;

/// How many records of each type a file holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecordCounts {
    pub venues: usize,
    pub events: usize,
    pub gates: usize,
    pub tickets: usize,
}

impl RecordCounts {
    pub fn of(records: &[NumberedRecord]) -> Self {
        records
            .iter()
            .fold(Self::default(), |mut counts, numbered| {
                match numbered.record {
                    InventoryRecord::Venue(_) => counts.venues += 1,
                    InventoryRecord::Event(_) => counts.events += 1,
                    InventoryRecord::Gate(_) => counts.gates += 1,
                    InventoryRecord::Ticket(_) => counts.tickets += 1,
                }
                counts
            })
    }
}

impl std::fmt::Display for RecordCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} venues, {} events, {} gates, {} tickets",
            self.venues, self.events, self.gates, self.tickets
        )
    }
}

pub fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("reading inventory file {}", path.display()))
}

/// Checks a file on its own, as the admin endpoint would against an empty
/// store: every venue and event a line names must be defined on an earlier line.
pub fn check_offline(text: &str) -> Result<Vec<NumberedRecord>, LineErrors> {
    let (records, syntax) = parse_ndjson(text);
    checked(records, syntax)
}

/// [`check_offline`] on a file read piece by piece (never held whole as
/// text), with a progress bar on stderr when `show_progress`.
pub fn check_file(
    path: &Path,
    show_progress: bool,
) -> anyhow::Result<Result<Vec<NumberedRecord>, LineErrors>> {
    let opening = || format!("reading inventory file {}", path.display());
    let mut file = std::fs::File::open(path).with_context(opening)?;
    let total = file.metadata().with_context(opening)?.len();
    let mut progress = FileProgress::new(total, "checking", show_progress);
    let mut parser = NdjsonParser::default();
    let mut buffer = vec![0; CHUNK_BYTES];
    loop {
        let read = file.read(&mut buffer).with_context(opening)?;
        if read == 0 {
            break;
        }
        parser.push(&buffer[..read]);
        progress.advance(&buffer[..read]);
    }
    let waiting = progress.then_wait_for("checking references between lines");
    let (records, syntax) = parser.finish();
    let checked = checked(records, syntax);
    waiting.done();
    Ok(checked)
}

fn checked(
    records: Vec<NumberedRecord>,
    syntax: LineErrors,
) -> Result<Vec<NumberedRecord>, LineErrors> {
    let errors = check_references(&records, syntax, |_| false);
    if errors.is_empty() {
        Ok(records)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_domain::inventory::LineError;

    #[test]
    fn counts_records_and_reports_unknown_references() {
        let good = "{\"type\":\"venue\",\"id\":\"V\",\"name\":\"A\"}\n{\"type\":\"gate\",\"venueId\":\"V\",\"name\":\"G\"}\n";
        let records = check_offline(good).unwrap();
        assert_eq!(
            RecordCounts::of(&records),
            RecordCounts {
                venues: 1,
                gates: 1,
                ..RecordCounts::default()
            }
        );
        let bad = "{\"type\":\"gate\",\"venueId\":\"V\",\"name\":\"G\"}\n";
        let errors = check_offline(bad).unwrap_err();
        assert_eq!(
            errors.listed(),
            [LineError::new(1, "venue 'V' is not known")]
        );
    }
}
