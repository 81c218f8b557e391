//! The background audit's metrics, read from its `AuditStats` at each scrape: runs by outcome,
//! the last success, whether this replica leads, and the last audit's results by namespace
//! (the first 64, else `other`), result and failure class. Must not count anything itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::audit::AuditStats;

/// The audit's families (shown, at zero, when the audit is off).
pub(super) struct AuditCollector(pub(super) Arc<AuditStats>);

impl std::fmt::Debug for AuditCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditCollector")
    }
}

impl Collector for AuditCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let zero = ConstCounter::new(0u64);
        let mut runs = encoder.encode_descriptor(
            "ocigate_audit_runs",
            "Background audits (serve --audit-interval) by outcome: ok (reported) or failed",
            None,
            zero.metric_type(),
        )?;
        for (outcome, n) in [("ok", &s.runs_ok), ("failed", &s.runs_failed)] {
            let c = ConstCounter::new(n.load(Ordering::Relaxed));
            c.encode(runs.encode_family(&[("outcome", outcome)])?)?;
        }
        let gauges = [
            (
                "ocigate_audit_last_success_timestamp_seconds",
                "When the last background audit was reported, in seconds since the Unix epoch (0: never)",
                s.last_success.load(Ordering::Relaxed),
            ),
            (
                "ocigate_audit_leader",
                "1 when this replica holds the audit's Lease and writes the PolicyReports",
                i64::from(s.leader.load(Ordering::Relaxed)),
            ),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let g = ConstGauge::new(0i64);
        let mut results = encoder.encode_descriptor(
            "ocigate_audit_results",
            "The last background audit's artifacts per workload, by namespace (the first 64, else \"other\"; \"\" cluster-scoped), result (pass, fail, warn, error) and failure class (\"none\" for a pass)",
            None,
            g.metric_type(),
        )?;
        for ((namespace, result, failure), n) in s.results() {
            let labels = [
                ("namespace", namespace.as_str()),
                ("result", result),
                ("failure", failure.as_str()),
            ];
            let g = ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
            g.encode(results.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
