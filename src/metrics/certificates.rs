//! The certificate series: days left on each certificate in service,
//! worked out at each scrape, and ACME orders by result.

use super::{Metrics, ResultLabels};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

impl Metrics {
    /// Count one ACME order, `ok` or not.
    pub fn acme_renewal(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.acme_renewals
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// Where `certificate_expiry_seconds` reads the certificates in service.
    pub fn certificates_from(&self, source: std::sync::Weak<dyn CertificateExpiry>) {
        *self
            .certificates
            .source
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(source);
    }
}

/// What holds the certificates in service: `(listener, name, not_after)`
/// for each.
pub trait CertificateExpiry: Send + Sync {
    fn expiries(&self) -> Vec<(String, String, std::time::SystemTime)>;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    listener: String,
    name: String,
}

/// `switchyard_certificate_expiry_seconds`, worked out at each scrape:
/// seconds left until each certificate in service expires.
#[derive(Default)]
pub(super) struct ExpiryCollector {
    source: std::sync::Mutex<Option<std::sync::Weak<dyn CertificateExpiry>>>,
}

impl std::fmt::Debug for ExpiryCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExpiryCollector")
    }
}

impl prometheus_client::collector::Collector for ExpiryCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let source = self
            .source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(std::sync::Weak::upgrade);
        let family =
            Family::<CertificateLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let now = std::time::SystemTime::now();
        for (listener, name, not_after) in source.map(|s| s.expiries()).unwrap_or_default() {
            let left = match not_after.duration_since(now) {
                Ok(left) => left.as_secs_f64(),
                Err(past) => -past.duration().as_secs_f64(),
            };
            family
                .get_or_create(&CertificateLabels { listener, name })
                .set(left.round());
        }
        let metric = encoder.encode_descriptor(
            "certificate_expiry_seconds",
            "Seconds until each certificate in service expires (negative once expired), by listener and first name",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}
