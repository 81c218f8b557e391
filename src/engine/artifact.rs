//! Checks of what [`crate::extract`] found: an artifact (a reference, a Flux semver reference
//! resolved to the tag Flux would pick, an invalid one) and a Flux source with its rule's
//! `fluxVerification` requirement. Must not extract anything itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::decision::Decision;
use super::{Engine, Failure, Planned, registry_step};
use crate::extract::{
    Artifact, Source, count_versions, highest_helm_tags, highest_tags, parse_helm_tag,
};
use crate::policy::{NamespaceContext, Verdict, flux_requirement};
use crate::reference::ImageRef;
use crate::registry::RegistryError;

/// A Flux semver reference: the repository and the constraint a tag must meet.
struct Semver<'a> {
    repository: &'a ImageRef,
    constraint: &'a crate::extract::SemverConstraint,
    constraint_text: &'a str,
    filter: Option<&'a str>,
    helm_tags: bool,
}

impl Engine {
    /// Decide on one source found by [`crate::extract`] (the webhook and `verify --manifests`
    /// share this): its artifact (a reference as it is; a Flux semver reference resolved to the
    /// tag Flux would pick, the highest match among the repository's tags, then checked; an
    /// invalid one denied) and, for a Flux source under a rule with `fluxVerification:
    /// required`, whether Flux verifies it itself too.
    pub async fn check_source(&self, source: &Source, deadline: Duration) -> Decision {
        self.check_source_in(source, None, deadline).await
    }

    /// [`Engine::check_source`] for a source found in an object of `namespace` (its name and
    /// labels; None for a cluster-scoped object): see [`Engine::check_in`].
    pub async fn check_source_in(
        &self,
        source: &Source,
        namespace: Option<&NamespaceContext>,
        deadline: Duration,
    ) -> Decision {
        let (mut d, planned) = self.artifact(&source.artifact, namespace, deadline).await;
        if !source.flux {
            return d;
        }
        let Some(planned) = planned else {
            return d;
        };
        let flux_verifies = source.flux_verify.as_ref().is_some_and(|v| v.is_cosign());
        if let Some(short) =
            flux_requirement(planned.rule(), flux_verifies, &source.flux_verify_field)
        {
            d.reasons.push(short.reason.clone());
            if d.failure.is_none() {
                d.failure = Some(Failure::FluxVerify);
            }
            d.verdict = short.stricter(d.verdict);
            d.say_needs(planned.rule());
        }
        d
    }

    /// The decision on one artifact, with the rule it was decided under (none: no rule applied).
    async fn artifact(
        &self,
        artifact: &Artifact,
        namespace: Option<&NamespaceContext>,
        deadline: Duration,
    ) -> (Decision, Option<Planned>) {
        let semver = match artifact {
            Artifact::Reference(r) => {
                return match self.plan(r, namespace) {
                    Ok(planned) => (
                        self.check_planned(&planned, r, deadline).await,
                        Some(planned),
                    ),
                    Err(d) => (*d, None),
                };
            }
            Artifact::Invalid { input, problem } => {
                return (Decision::invalid(input.clone(), problem.clone()), None);
            }
            Artifact::Semver {
                repository,
                constraint,
                constraint_text,
                filter,
                helm_tags,
            } => Semver {
                repository,
                constraint,
                constraint_text,
                filter: filter.as_deref(),
                helm_tags: *helm_tags,
            },
        };
        match self.plan(semver.repository, namespace) {
            Ok(planned) => (
                self.check_semver(&planned, &semver, deadline).await,
                Some(planned),
            ),
            Err(d) => (*d, None),
        }
    }

    /// The highest tag of the repository that meets the constraint, checked under the rule
    /// planned for the repository.
    async fn check_semver(
        &self,
        planned: &Planned,
        semver: &Semver<'_>,
        deadline: Duration,
    ) -> Decision {
        let started = Instant::now();
        let repository = semver.repository;
        let constraint_text = semver.constraint_text;
        let rule = planned.rule();
        let fail = |reason, failure| Decision::failed_under(repository, rule, reason, failure);
        let filter = match semver.filter.map(regex::Regex::new).transpose() {
            Ok(f) => f,
            Err(e) => {
                let reason = format!("semverFilter is not a regular expression: {e}");
                return fail(reason, Failure::Invalid);
            }
        };
        let listing = self.tags(repository);
        let (doing, step) = (
            format!("listing the tags of {repository}"),
            format!("list the tags of {repository}"),
        );
        let tags = match registry_step(deadline, &doing, &step, listing).await {
            Err((reason, failure)) => return fail(reason, failure),
            Ok(tags) => tags,
        };
        let (picked, versions) = if semver.helm_tags {
            let versions = tags.iter().filter(|t| parse_helm_tag(t).is_some()).count();
            (highest_helm_tags(&tags, semver.constraint), versions)
        } else {
            let versions = count_versions(&tags, filter.as_ref());
            (
                highest_tags(&tags, semver.constraint, filter.as_ref()),
                versions,
            )
        };
        let why = match picked.as_slice() {
            [] => {
                let reason = format!(
                    "no tag of {repository} matches semver {constraint_text:?} ({versions} \
                     version tags among {} tags)",
                    tags.len()
                );
                return fail(reason, Failure::NotFound);
            }
            [tag] => format!(
                "semver {constraint_text:?} picks tag {tag} (the highest match among \
                 {versions} version tags)"
            ),
            tied => format!(
                "semver {constraint_text:?} picks one of the equally high tags {} (Flux \
                 may pull either: each is checked)",
                tied.join(", ")
            ),
        };
        let remaining = deadline.saturating_sub(started.elapsed());
        let mut d = self
            .check_tags(planned, repository, &picked, remaining)
            .await;
        d.reasons.insert(0, why);
        d
    }

    /// Each of `tags` (at least one) checked; the first decision that is not an allow, or the
    /// first allow when all are.
    async fn check_tags(
        &self,
        planned: &Planned,
        repository: &ImageRef,
        tags: &[String],
        deadline: Duration,
    ) -> Decision {
        let refs: Vec<ImageRef> = tags.iter().map(|t| repository.with_tag(t)).collect();
        let checks = refs
            .iter()
            .map(|r| self.check_planned(planned, r, deadline));
        let mut decisions = futures_util::future::join_all(checks).await;
        let refused = decisions.iter().position(|d| d.verdict != Verdict::Allow);
        let at = refused.unwrap_or(0);
        if at < decisions.len() {
            return decisions.swap_remove(at);
        }
        Decision::invalid(repository.to_string(), "no tag to check".into())
    }

    /// The tags of a repository, cached for `resolve_ttl` per credential identity.
    async fn tags(&self, repository: &ImageRef) -> Result<Arc<Vec<String>>, RegistryError> {
        let key = (
            self.inner.registry.credential_id(repository),
            repository.name(),
        );
        if let Some(t) = self.inner.caches.tags.get(&key) {
            return Ok(t);
        }
        let mut tags = self.inner.registry.list_tags(repository).await?;
        // What is not a tag cannot be picked (and is not kept).
        tags.retain(|t| crate::reference::is_valid_tag(t));
        let tags = Arc::new(tags);
        if !self.inner.config.resolve_ttl.is_zero() {
            self.inner.caches.tags.insert(key, tags.clone());
        }
        Ok(tags)
    }
}
