//! Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it:
//! the holder renews `renewTime` every few seconds; another replica takes the Lease over only
//! once it has seen the same record unchanged for `leaseDurationSeconds` on its own monotonic
//! clock (never by comparing the holder's `renewTime` with its own wall clock: a replica whose
//! clock runs ahead would take a Lease that is being renewed), by a conditional update (its
//! `resourceVersion`), so two replicas never both believe they hold it for long. Must not know
//! what the leader does.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::kube::{KubeApi, KubeApiError, Written};

/// How long a Lease is held without renewal (client-go's default).
const LEASE_DURATION: Duration = Duration::from_secs(15);

/// How often the holder renews and the others look (client-go's retry period is 2 s; a
/// third of the duration leaves two tries before another replica may take over).
pub(crate) const RETRY: Duration = Duration::from_secs(5);

/// One replica's side of the election of the Lease `name` in `namespace`.
pub(crate) struct Elector {
    /// The Lease's namespace.
    pub(crate) namespace: String,
    /// The Lease's name.
    pub(crate) name: String,
    /// This replica's identity (the Pod's name, then a random suffix).
    pub(crate) identity: String,
    /// The Lease's record as last seen (holder, times, transitions) and when it was first seen
    /// so, on this replica's monotonic clock.
    observed: Mutex<Option<(String, Instant)>>,
}

/// The longest `leaseDurationSeconds` believed (an hour): a larger value, or one that is not
/// a number of seconds, is taken as this one, never as a time that overflows.
const MAX_LEASE_DURATION: Duration = Duration::from_secs(3600);

impl Elector {
    /// Runs for the Lease `name` in `namespace` as this Pod (`POD_NAME`, else `HOSTNAME`, else
    /// `ocigate`) with a random suffix, so that a restarted replica is a new candidate.
    pub(crate) fn new(namespace: String, name: String) -> Self {
        let pod = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "ocigate".into());
        let mut suffix = [0u8; 4];
        // Without randomness the suffix is zero: the Pod's name still tells replicas apart.
        let _ = aws_lc_rs::rand::fill(&mut suffix);
        let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        Elector::named(namespace, name, format!("{pod}-{suffix}"))
    }

    /// The elector of `identity`, which has seen no Lease yet.
    fn named(namespace: String, name: String, identity: String) -> Self {
        Elector {
            namespace,
            name,
            identity,
            observed: Mutex::new(None),
        }
    }

    /// Whether another replica's Lease `spec` has run out at `at`: the same record has been
    /// seen unchanged for its duration since this replica first saw it so (client-go's rule:
    /// on first sight, a full duration is waited).
    fn expired(&self, spec: &Value, at: Instant) -> bool {
        let record = format!(
            "{}\0{}\0{}\0{}\0{}",
            spec["holderIdentity"],
            spec["leaseDurationSeconds"],
            spec["acquireTime"],
            spec["renewTime"],
            spec["leaseTransitions"]
        );
        let mut observed = crate::sync::lock(&self.observed);
        let since = match observed.as_ref() {
            Some((seen, since)) if *seen == record => *since,
            _ => {
                *observed = Some((record, at));
                at
            }
        };
        let duration = spec["leaseDurationSeconds"]
            .as_u64()
            .filter(|s| *s > 0)
            .map_or(LEASE_DURATION, Duration::from_secs)
            .min(MAX_LEASE_DURATION);
        at.saturating_duration_since(since) > duration
    }

    fn path(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}",
            self.namespace, self.name
        )
    }

    /// One round at `now`: acquire the Lease if it is free or expired, renew it if held; true
    /// when this replica holds it afterwards. An error is not holding it.
    pub(crate) async fn round(
        &self,
        api: &KubeApi,
        now: DateTime<Utc>,
    ) -> Result<bool, KubeApiError> {
        let Some(lease) = api.fresh(&self.path()).await? else {
            let collection = format!(
                "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
                self.namespace
            );
            let body = self.lease(None, now, now, 0);
            return Ok(matches!(
                api.create(&collection, &body).await?,
                Written::Done
            ));
        };
        let spec = &lease["spec"];
        let holder = spec["holderIdentity"].as_str().unwrap_or_default();
        let transitions = spec["leaseTransitions"].as_u64().unwrap_or(0);
        let version = lease["metadata"]["resourceVersion"].as_str();
        let body = if holder == self.identity {
            let acquired = parse_time(&spec["acquireTime"]).unwrap_or(now);
            self.lease(version, acquired, now, transitions)
        } else if holder.is_empty() || self.expired(spec, Instant::now()) {
            self.lease(version, now, now, transitions + 1)
        } else {
            return Ok(false);
        };
        Ok(matches!(
            api.replace(&self.path(), &body).await?,
            Written::Done
        ))
    }

    /// The Lease as this replica holds it (conditional on `version` when given).
    fn lease(
        &self,
        version: Option<&str>,
        acquired: DateTime<Utc>,
        renewed: DateTime<Utc>,
        transitions: u64,
    ) -> Value {
        let mut metadata = json!({"name": self.name, "namespace": self.namespace});
        if let Some(v) = version {
            metadata["resourceVersion"] = v.into();
        }
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": LEASE_DURATION.as_secs(),
                "acquireTime": micro_time(acquired),
                "renewTime": micro_time(renewed),
                "leaseTransitions": transitions,
            }
        })
    }
}

/// Kubernetes' MicroTime: RFC 3339 with microseconds, UTC.
fn micro_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elector(identity: &str) -> Elector {
        Elector::named(
            "ocigate-system".into(),
            "ocigate-audit".into(),
            identity.into(),
        )
    }

    /// Expiry is measured on the observer's own clock from when it first saw the record, not
    /// from the holder's `renewTime`: neither clock skew nor an old `renewTime` lets a replica
    /// take a Lease that is still being renewed.
    #[test]
    fn a_lease_expires_a_duration_after_its_record_last_changed_as_seen_here() {
        let e = elector("b");
        let spec = |renew: &str| json!({"holderIdentity": "a", "renewTime": renew, "leaseDurationSeconds": 15});
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // Renewed "long ago" by the holder's clock, but first seen now: a full duration waited.
        let old = spec("2001-01-01T00:00:00.000000Z");
        assert!(!e.expired(&old, t0));
        assert!(!e.expired(&old, t0 + s(14)));
        assert!(e.expired(&old, t0 + s(16)));
        // A renewal seen restarts the wait, whatever its time says.
        let renewed = spec("2001-01-01T00:00:05.000000Z");
        assert!(!e.expired(&renewed, t0 + s(16)));
        assert!(!e.expired(&renewed, t0 + s(30)));
        assert!(e.expired(&renewed, t0 + s(32)));
        // A duration that is no number of seconds, or an absurd one, overflows nothing.
        let e = elector("c");
        let absurd = json!({"holderIdentity": "a", "leaseDurationSeconds": 9.2e18});
        assert!(!e.expired(&absurd, t0));
        assert!(e.expired(&absurd, t0 + s(16)));
        let huge = json!({"holderIdentity": "a", "leaseDurationSeconds": u64::MAX});
        let e = elector("d");
        assert!(!e.expired(&huge, t0));
        assert!(!e.expired(&huge, t0 + s(3599)));
        assert!(e.expired(&huge, t0 + s(3601)));
        assert_eq!(
            micro_time(
                DateTime::parse_from_rfc3339("2026-12-03T18:00:20Z")
                    .unwrap()
                    .to_utc()
            ),
            "2026-12-03T18:00:20.000000Z"
        );
    }

    #[test]
    fn the_lease_written_names_this_replica_and_is_conditional() {
        let e = elector("ocigate-7f-abc");
        let t = Utc::now();
        let l = e.lease(Some("42"), t, t, 3);
        assert_eq!(l["metadata"]["resourceVersion"], "42");
        assert_eq!(l["spec"]["holderIdentity"], "ocigate-7f-abc");
        assert_eq!(l["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(l["spec"]["leaseTransitions"], 3);
        assert!(
            e.lease(None, t, t, 0)["metadata"]
                .get("resourceVersion")
                .is_none()
        );
    }
}
