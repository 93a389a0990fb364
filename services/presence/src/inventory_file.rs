//! Inventory files: read, parse and check NDJSON without a server.

use anyhow::Context;
use presence_domain::inventory::{
    InventoryRecord, LineErrors, NumberedRecord, check_references, parse_ndjson,
};
use std::path::Path;

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
