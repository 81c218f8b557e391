//! Checks about indexes and their platform manifests: `verify --platform` (an index's entry for
//! one platform), and the note on a platform manifest found unsigned while the index listing it
//! is signed. Must not choose platforms itself ([`crate::platform`] does).

use std::time::{Duration, Instant};

use super::decision::{Decision, PlatformPick};
use super::{Engine, Failure, Planned, registry_step};
use crate::platform::Platform;
use crate::policy::Verdict;
use crate::reference::ImageRef;

impl Engine {
    /// [`Engine::check_with_deadline`] under a planned rule: the decision, and for a platform
    /// manifest pinned under a tag that names a signed index, the note that says so.
    pub(super) async fn check_planned(
        &self,
        planned: &Planned,
        reference: &ImageRef,
        deadline: Duration,
    ) -> Decision {
        let started = Instant::now();
        let mut d = self.decide(planned, reference, deadline).await;
        if d.failure == Some(Failure::Unsigned)
            && let (Some(tag), Some(digest)) = (reference.tag(), reference.digest())
        {
            let by_tag = reference.with_tag(tag);
            let resolving =
                crate::registry::with_deadline(started + deadline, self.resolve(&by_tag));
            let remaining = deadline.saturating_sub(started.elapsed());
            if let Ok(Ok(index)) = tokio::time::timeout(remaining, resolving).await
                && index.digest != *digest
                && let Some(entry) = index
                    .lists
                    .as_deref()
                    .and_then(|l| l.iter().find(|e| e.digest == *digest))
            {
                let listed = entry
                    .platform
                    .as_ref()
                    .map_or_else(String::new, |p| format!(" (for {p})"));
                let index_ref = reference.with_digest(index.digest.clone());
                let lead = format!(
                    "the tag {tag} names the index {}, which lists this manifest{listed}; the index",
                    index.digest
                );
                let remaining = deadline.saturating_sub(started.elapsed());
                let note = self.signed_index_note(planned, &index_ref, &lead, remaining);
                if let Some(note) = note.await {
                    d.reasons.push(note);
                }
            }
        }
        d
    }

    /// If the index `index_ref` (pinned) has signatures, why they do not help a platform
    /// manifest it lists: `lead` names the index, then "is signed …".
    async fn signed_index_note(
        &self,
        planned: &Planned,
        index_ref: &ImageRef,
        lead: &str,
        deadline: Duration,
    ) -> Option<String> {
        let of_index = self.decide(planned, index_ref, deadline).await;
        let rule = of_index.rule.as_deref().unwrap_or("?");
        let how = match of_index.failure {
            None if of_index.verdict == Verdict::Allow => {
                format!("is signed and passes rule {rule}")
            }
            Some(
                f @ (Failure::Untrusted | Failure::Mismatch | Failure::Annotation | Failure::Tlog),
            ) => {
                format!(
                    "is signed, though not as rule {rule} requires ({})",
                    f.as_str()
                )
            }
            _ => return None,
        };
        Some(format!(
            "{lead} {how}, but a signature on an index does not cover the platform manifests it \
             lists: verify the index, or sign each platform manifest too (ocigate sign --recursive)"
        ))
    }

    /// Decide on the manifest an index lists for `platform` (`verify --platform`): the index
    /// is fetched, its entry for the platform chosen, and that manifest checked as
    /// [`Engine::check_with_deadline`] does. A platform manifest found unsigned while the index
    /// is signed says so: a signature on an index does not cover the manifests it lists.
    pub async fn check_platform(
        &self,
        reference: &ImageRef,
        platform: &Platform,
        deadline: Duration,
    ) -> Decision {
        self.check_platform_in(reference, platform, None, deadline)
            .await
    }

    /// [`Engine::check_platform`] for a check in `namespace` (see [`Engine::check_in`]).
    pub async fn check_platform_in(
        &self,
        reference: &ImageRef,
        platform: &Platform,
        namespace: Option<&crate::policy::NamespaceContext>,
        deadline: Duration,
    ) -> Decision {
        let started = Instant::now();
        let planned = match self.plan(reference, namespace) {
            Ok(p) => p,
            Err(d) => return *d,
        };
        let (index, entry) = match self
            .platform_entry(&planned, reference, platform, deadline)
            .await
        {
            Ok(picked) => picked,
            Err(d) => return *d,
        };
        let child = reference.with_digest(entry.digest.clone());
        let remaining = deadline.saturating_sub(started.elapsed());
        let mut d = self.decide(&planned, &child, remaining).await;
        d.reasons.insert(
            0,
            format!(
                "platform {platform}: the manifest {} listed by the index {}",
                entry.digest, index.digest
            ),
        );
        if d.failure == Some(Failure::Unsigned) {
            let lead = format!("the index {}", index.digest);
            let index_ref = reference.with_digest(index.digest.clone());
            let remaining = deadline.saturating_sub(started.elapsed());
            let note = self.signed_index_note(&planned, &index_ref, &lead, remaining);
            if let Some(note) = note.await {
                d.reasons.push(note);
            }
        }
        d.platform = Some(PlatformPick {
            platform: platform.to_string(),
            index: index.digest.to_string(),
        });
        d
    }

    /// The index `reference` names and its entry for `platform`; `Err` is the decision when
    /// there is none (not found, not an index, no such platform, a registry failure).
    async fn platform_entry(
        &self,
        planned: &Planned,
        reference: &ImageRef,
        platform: &Platform,
        deadline: Duration,
    ) -> Result<(crate::registry::Manifest, crate::platform::IndexEntry), Box<Decision>> {
        let rule = planned.rule();
        let fail =
            |reason, failure| Box::new(Decision::failed_under(reference, rule, reason, failure));
        let fetching = self.inner.registry.get_manifest(reference);
        let (doing, step) = (
            format!("resolving {reference}"),
            format!("resolve {reference}"),
        );
        let index = match registry_step(deadline, &doing, &step, fetching).await {
            Err((reason, failure)) => return Err(fail(reason, failure)),
            Ok(None) => {
                return Err(fail(
                    format!("{reference} was not found"),
                    Failure::NotFound,
                ));
            }
            Ok(Some(m)) => m,
        };
        let entries = match crate::platform::index_entries(&index.media_type, &index.bytes) {
            Ok(Some(entries)) => entries,
            Ok(None) => {
                let reason = format!(
                    "{reference} ({}) is a single manifest, not an index of platforms: there is \
                     no {platform} entry to pick; verify it without --platform",
                    index.digest
                );
                return Err(fail(reason, Failure::NotFound));
            }
            Err(e) => {
                let reason = format!("the index {reference} ({}): {e}", index.digest);
                return Err(fail(reason, Failure::Registry));
            }
        };
        let Some(entry) = crate::platform::select(&entries, platform) else {
            let reason = format!(
                "the index {reference} ({}) lists no {platform} manifest; it lists {}",
                index.digest,
                crate::platform::listed_platforms(&entries)
            );
            return Err(fail(reason, Failure::NotFound));
        };
        let entry = entry.clone();
        Ok((index, entry))
    }
}
