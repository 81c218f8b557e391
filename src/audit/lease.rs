//! Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it:
//! the holder renews `renewTime` every few seconds; another replica takes the Lease over only
//! once `renewTime + leaseDurationSeconds` has passed, by a conditional update (its
//! `resourceVersion`), so two replicas never both believe they hold it for long. Must not know
//! what the leader does.

use std::time::Duration;

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
}

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
        Elector {
            namespace,
            name,
            identity: format!("{pod}-{suffix}"),
        }
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
        } else if holder.is_empty() || expired(spec, now) {
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

/// Whether the Lease `spec` describes has run out at `now` (no renewal time: it has).
fn expired(spec: &Value, now: DateTime<Utc>) -> bool {
    let seconds = spec["leaseDurationSeconds"].as_i64().unwrap_or(0);
    match parse_time(&spec["renewTime"]) {
        Some(renewed) => renewed + chrono::Duration::seconds(seconds) < now,
        None => true,
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

    #[test]
    fn a_lease_expires_after_its_duration_since_the_last_renewal() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T18:00:20Z")
            .unwrap()
            .with_timezone(&Utc);
        let spec = |renew: &str| json!({"renewTime": renew, "leaseDurationSeconds": 15});
        assert!(!expired(&spec("2026-12-03T18:00:10.000000Z"), now));
        assert!(expired(&spec("2026-12-03T18:00:04.999999Z"), now));
        assert!(expired(&json!({"leaseDurationSeconds": 15}), now));
        assert_eq!(micro_time(now), "2026-12-03T18:00:20.000000Z");
    }

    #[test]
    fn the_lease_written_names_this_replica_and_is_conditional() {
        let e = Elector {
            namespace: "ocigate-system".into(),
            name: "ocigate-audit".into(),
            identity: "ocigate-7f-abc".into(),
        };
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
