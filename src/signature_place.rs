//! Where signatures are kept when not beside the image (`signaturesRepository`, cosign's
//! `COSIGN_REPOSITORY`) and repository prefixes (`remapPrefix`), in canonical form. No I/O.
//!
//! A signatures repository moves only discovery and writing: the `.sig`/`.att` tags
//! (`sha256-<hex>.sig`, named by the image's digest), the referrers API and the referrers tag
//! of that repository, the subject still the image's digest. The digest itself is resolved in
//! the image's own repository. This is what cosign 3.1.1 does with `COSIGN_REPOSITORY`
//! (`ociremote.WithTargetRepository`: the tags, `Referrers`, and the bundles a referrer names
//! are all read from, and written to, the target repository).

use std::fmt;

use crate::reference::{Digest, ImageRef, Location, ReferenceError, canonical_host};

/// The environment variable cosign reads for the repository signatures are kept in.
pub const COSIGN_REPOSITORY: &str = "COSIGN_REPOSITORY";

/// A repository signatures and attestations are kept in, instead of the image's own:
/// `registry/repository` (canonical host, Docker Hub's `library/` as every name the policy
/// matches), or `oci-layout:PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignaturesRepository(ImageRef);

/// A signatures repository or a repository prefix that cannot be used; Display names the
/// value and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlaceError {
    /// Not a repository name at all.
    #[error("{input:?} is not a repository name")]
    Reference {
        /// The text as written.
        input: String,
        /// What the reference parser said.
        #[source]
        source: ReferenceError,
    },
    /// A repository names no tag or digest: it is where tags and digests are looked up.
    #[error("{input:?} names a tag or digest; a signatures repository is only REGISTRY/REPOSITORY")]
    TagOrDigest {
        /// The text as written.
        input: String,
    },
    /// A prefix that is not `HOST[/PATH]` with a valid host and lowercase path segments.
    #[error("{input:?} is not a repository prefix (HOST or HOST/PATH): {problem}")]
    Prefix {
        /// The text as written.
        input: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl SignaturesRepository {
    /// Parse `REGISTRY/REPOSITORY` (or `oci-layout:PATH`) as a reference is parsed, without a
    /// tag or digest.
    pub fn parse(input: &str) -> Result<Self, PlaceError> {
        let r = ImageRef::parse(input).map_err(|source| PlaceError::Reference {
            input: input.to_string(),
            source,
        })?;
        if r.tag().is_some() || r.digest().is_some() {
            return Err(PlaceError::TagOrDigest {
                input: input.to_string(),
            });
        }
        Ok(SignaturesRepository(r))
    }

    /// Its canonical name, `registry/repository` or `oci-layout:PATH`.
    pub fn name(&self) -> String {
        self.0.name()
    }

    /// Where it lives.
    pub fn location(&self) -> &Location {
        self.0.location()
    }

    /// As a reference (no tag, no digest).
    pub fn reference(&self) -> &ImageRef {
        &self.0
    }

    /// The reference discovery and signing use for the signatures of `digest`: this repository,
    /// pinned to the image's digest (the tags `sha256-<hex>.sig` and the referrers of the
    /// digest are looked up from it).
    pub fn of(&self, digest: &Digest) -> ImageRef {
        self.0.with_digest(digest.clone())
    }
}

impl fmt::Display for SignaturesRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Where the signatures of `image` pinned to `digest` are: `signatures` when given, else the
/// image's own repository.
pub fn signatures_of(
    image: &ImageRef,
    digest: &Digest,
    signatures: Option<&SignaturesRepository>,
) -> ImageRef {
    match signatures {
        Some(s) => s.of(digest),
        None => image.with_digest(digest.clone()),
    }
}

/// A repository prefix, `HOST` or `HOST/PATH`, in canonical form (the host as
/// [`canonical_host`] spells it, the path as written, which must be lowercase repository
/// segments): what `remapPrefix`'s `prefix` and `signedPrefix` are. A prefix matches a name on
/// path-segment boundaries only (`harbor.corp/dockerhub` matches `harbor.corp/dockerhub/x`,
/// never `harbor.corp/dockerhubx`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct RepositoryPrefix(String);

impl RepositoryPrefix {
    /// Parse `HOST[/PATH]`. No `library/` is added: a prefix is compared with canonical names
    /// as written (`docker.io/library` for Docker Hub's official images, `docker.io` for all).
    pub fn parse(input: &str) -> Result<Self, PlaceError> {
        let problem = |problem: String| PlaceError::Prefix {
            input: input.to_string(),
            problem,
        };
        let trimmed = input.strip_suffix('/').unwrap_or(input);
        let (host, path) = match trimmed.split_once('/') {
            Some((h, p)) => (h, Some(p)),
            None => (trimmed, None),
        };
        let host = canonical_host(host).map_err(problem)?;
        let Some(path) = path else {
            return Ok(RepositoryPrefix(host));
        };
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        };
        if !path.split('/').all(segment_ok) {
            return Err(problem(
                "path segments are lowercase letters, digits, '.', '_' and '-'".into(),
            ));
        }
        Ok(RepositoryPrefix(format!("{host}/{path}")))
    }

    /// As written in canonical form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What follows this prefix in `name` (a canonical `registry/repository`), starting with
    /// `/` or empty; None when the prefix does not match on a segment boundary.
    pub fn rest_of<'n>(&self, name: &'n str) -> Option<&'n str> {
        let rest = name.strip_prefix(self.0.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }
}

/// `name` (canonical) with `prefix` replaced by `signed`, in canonical form again (Docker
/// Hub's `library/` added where a reference would have it); None when `prefix` does not match
/// or the result is not a repository name.
pub fn remap(name: &str, prefix: &RepositoryPrefix, signed: &RepositoryPrefix) -> Option<String> {
    let rest = prefix.rest_of(name)?;
    let remapped = format!("{}{rest}", signed.as_str());
    ImageRef::parse(&remapped).ok().map(|r| r.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_repository_is_canonical_and_has_no_tag() {
        let r = SignaturesRepository::parse("Index.Docker.IO/acme").unwrap();
        assert_eq!(r.name(), "docker.io/library/acme");
        let r = SignaturesRepository::parse("reg.example:443/sigs/app").unwrap();
        assert_eq!(r.name(), "reg.example/sigs/app");
        assert!(matches!(
            SignaturesRepository::parse("reg.example/sigs:v1"),
            Err(PlaceError::TagOrDigest { .. })
        ));
        assert!(matches!(
            SignaturesRepository::parse("reg.example/Sigs"),
            Err(PlaceError::Reference { .. })
        ));
        let d = Digest::sha256_of(b"x");
        let image = ImageRef::parse("reg.example/app:v1").unwrap();
        assert_eq!(
            signatures_of(&image, &d, Some(&r)).to_string(),
            format!("reg.example/sigs/app@{d}")
        );
        assert_eq!(signatures_of(&image, &d, None).digest(), Some(&d));
    }

    #[test]
    fn prefixes_match_on_segment_boundaries_and_remap_canonically() {
        let p = RepositoryPrefix::parse("Harbor.Corp/dockerhub").unwrap();
        let s = RepositoryPrefix::parse("index.docker.io").unwrap();
        assert_eq!(s.as_str(), "docker.io");
        assert_eq!(
            remap("harbor.corp/dockerhub/library/nginx", &p, &s).as_deref(),
            Some("docker.io/library/nginx")
        );
        // a short Hub name behind the proxy is the official image's
        assert_eq!(
            remap("harbor.corp/dockerhub/nginx", &p, &s).as_deref(),
            Some("docker.io/library/nginx")
        );
        assert_eq!(remap("harbor.corp/dockerhubx/nginx", &p, &s), None);
        assert_eq!(remap("harbor.corp/other/nginx", &p, &s), None);
        assert!(RepositoryPrefix::parse("harbor.corp/Up").is_err());
        assert!(RepositoryPrefix::parse("harbor corp").is_err());
        assert!(RepositoryPrefix::parse("harbor.corp//x").is_err());
    }
}
