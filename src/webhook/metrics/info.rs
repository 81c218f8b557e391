//! What the process is and what it serves: `ocigate_build_info` (version, revision, rustc) and
//! `ocigate_tls_certificate_expiry_timestamp_seconds` (the served certificate's `notAfter`,
//! read at each scrape). Owns no state of its own; must not read files.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::gauge::ConstGauge;

use crate::webhook::tls::Certificates;

/// The commit this was built from, as `ocigate version` says it (build.rs: "unknown" outside
/// a git checkout, "-dirty" with uncommitted changes).
const REVISION: &str = env!("OCIGATE_COMMIT");

/// The version of the rustc that built ocigate (build.rs), or "unknown".
const RUSTC: &str = env!("OCIGATE_RUSTC_VERSION");

/// `ocigate_build_info` (always 1) and the served certificate's expiry.
pub(super) struct InfoCollector {
    /// The certificate the webhook serves (swapped on reload).
    pub(super) certificates: Arc<Certificates>,
}

impl std::fmt::Debug for InfoCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InfoCollector")
    }
}

impl Collector for InfoCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let one = ConstGauge::new(1i64);
        let mut family = encoder.encode_descriptor(
            "ocigate_build_info",
            "Always 1: the version, source revision and rustc version of this build",
            None,
            one.metric_type(),
        )?;
        let labels = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("revision", REVISION),
            ("rustc", RUSTC),
        ];
        one.encode(family.encode_family(&labels)?)?;
        if let Some(not_after) = self.certificates.not_after() {
            let g = ConstGauge::new(not_after as i64);
            let m = encoder.encode_descriptor(
                "ocigate_tls_certificate_expiry_timestamp_seconds",
                "When the webhook's serving certificate expires (its notAfter), in seconds since the Unix epoch",
                None,
                g.metric_type(),
            )?;
            g.encode(m)?;
        }
        Ok(())
    }
}
