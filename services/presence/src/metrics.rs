//! The embedded store's figures on `/metrics`, read at each scrape.

use presence_store_embedded::{BATCH_DURATION_BOUNDS, EmbeddedStore};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::Arc;

/// Group-commit figures an operator graphs: how many writes share an fsync,
/// how long a batch takes (a slow disk shows here before anywhere else), and
/// whether commits fail.
#[derive(Debug)]
pub struct StoreMetrics {
    store: Arc<EmbeddedStore>,
}

impl StoreMetrics {
    pub fn new(store: Arc<EmbeddedStore>) -> Self {
        Self { store }
    }
}

impl Collector for StoreMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.store.stats();
        let counters = [
            (
                "store_writes",
                "Writes (scans, venue stats tallies, devices, inventory) run by the embedded store",
                stats.jobs,
            ),
            (
                "store_batches",
                "Write transactions, one per group of writes",
                stats.batches,
            ),
            (
                "store_durable_commits",
                "Batches committed to disk, one fsync each",
                stats.durable_commits,
            ),
            (
                "store_failed_batches",
                "Batches abandoned because the store failed (callers got 503)",
                stats.failed_batches,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let largest = ConstGauge::new(i64::try_from(stats.largest_batch).unwrap_or(i64::MAX));
        largest.encode(encoder.encode_descriptor(
            "store_largest_batch",
            "Most writes one transaction has held since start",
            None,
            largest.metric_type(),
        )?)?;
        let durations = stats.batch_durations;
        // The encoder adds the buckets up; the last bound, f64::MAX, reads +Inf.
        let buckets: Vec<(f64, u64)> = BATCH_DURATION_BOUNDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(durations.counts)
            .collect();
        let total_seconds = std::time::Duration::from_micros(durations.total_micros).as_secs_f64();
        encoder
            .encode_descriptor(
                "store_batch_duration_seconds",
                "Time the store writer took per batch: its writes, the commit and the fsync",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(
                total_seconds,
                durations.counts.iter().sum(),
                &buckets,
                None,
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_domain::VenueId;
    use presence_ports::DeviceStore;
    use presence_store_embedded::EmbeddedOptions;
    use prometheus_client::registry::Registry;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[tokio::test]
    async fn store_figures_move_with_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let mut registry = Registry::with_prefix("presence");
        registry.register_collector(Box::new(StoreMetrics::new(store.clone())));
        assert!(scrape(&registry).contains("presence_store_durable_commits_total 0"));
        store
            .ensure_gate(&VenueId::new("V"), "North")
            .await
            .unwrap();
        let text = scrape(&registry);
        assert!(text.contains("presence_store_writes_total 1"), "{text}");
        assert!(
            text.contains("presence_store_durable_commits_total 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE presence_store_largest_batch gauge"),
            "{text}"
        );
        assert!(
            text.contains("presence_store_batch_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("presence_store_batch_duration_seconds_bucket{le=\"+Inf\"} 1"),
            "{text}"
        );
    }
}
