//! Artifact references: `registry/repository[:tag][@digest]` (Docker Hub short forms included) and
//! `oci-layout:PATH[:tag|@digest]`. Parsing only; no I/O.

use std::fmt;
use std::path::{Path, PathBuf};

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// Prefix of references to an OCI image layout directory on disk.
pub const LAYOUT_PREFIX: &str = "oci-layout:";

/// A reference that could not be parsed; Display names the input and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// Not a reference this tool reads.
    #[error("reference {input:?}: {problem}")]
    Invalid {
        /// The reference as written.
        input: String,
        /// What is wrong with it.
        problem: String,
    },
}

fn invalid(input: &str, problem: impl Into<String>) -> ReferenceError {
    ReferenceError::Invalid {
        input: input.to_string(),
        problem: problem.into(),
    }
}

/// A content digest, `sha256:<64 lowercase hex>` (or `sha512:<128 hex>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    /// Parse and validate a digest string.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| invalid(s, "a digest must look like sha256:<hex>"))?;
        let want = match alg {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(invalid(s, format!("unsupported digest algorithm {alg:?}"))),
        };
        if hex.len() != want || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid(
                s,
                format!("a {alg} digest has {want} lowercase hex characters"),
            ));
        }
        Ok(Digest(s.to_string()))
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Self {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
        Digest(format!("sha256:{}", hex::encode(d.as_ref())))
    }

    /// Whether `data` hashes to this digest.
    pub fn matches(&self, data: &[u8]) -> bool {
        let alg = match self.algorithm() {
            "sha256" => &aws_lc_rs::digest::SHA256,
            "sha512" => &aws_lc_rs::digest::SHA512,
            _ => return false,
        };
        hex::encode(aws_lc_rs::digest::digest(alg, data).as_ref()) == self.hex()
    }

    /// `algorithm:hex`, as written in manifests.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The algorithm (`sha256`, `sha512`).
    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map_or("", |(a, _)| a)
    }
    /// The hex-encoded hash.
    pub fn hex(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, h)| h)
    }
    /// The tag cosign derives from a digest: `sha256-<hex>`; legacy signatures add `.sig`.
    pub fn tag_prefix(&self) -> String {
        format!("{}-{}", self.algorithm(), self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an artifact lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A repository on a registry.
    Registry {
        /// The registry host in its one canonical spelling (`docker.io`, `host:port`).
        registry: String,
        /// The repository path (`library/nginx`).
        repository: String,
    },
    /// An OCI image layout directory.
    Layout {
        /// The layout's directory.
        path: PathBuf,
    },
}

/// A parsed artifact reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    location: Location,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parse a reference as a user writes it.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(invalid(input, "empty reference"));
        }
        if s.chars().any(char::is_control) {
            return Err(invalid(
                input,
                "references cannot contain control characters",
            ));
        }
        if s.chars().any(char::is_whitespace) {
            return Err(invalid(input, "references cannot contain spaces"));
        }
        if let Some(rest) = s.strip_prefix(LAYOUT_PREFIX) {
            return Self::parse_layout(input, rest);
        }
        // What Flux and Helm users write (`oci://ghcr.io/acme/chart`) names the same artifact.
        let s = s.strip_prefix("oci://").unwrap_or(s);
        if s.starts_with('/') || s.starts_with("./") || s.starts_with("../") || s.starts_with('~') {
            return Err(invalid(
                input,
                format!("this is a filesystem path; did you mean oci-layout:{s}?"),
            ));
        }
        if s.contains("://") {
            return Err(invalid(
                input,
                "a reference has no scheme; write registry/repository[:tag][@digest]",
            ));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (
                n,
                Some(Digest::parse(d).map_err(|_| {
                    invalid(input, format!("{d:?} is not a digest like sha256:<64 hex>"))
                })?),
            ),
            None => (s, None),
        };
        // A ':' after the last '/' separates the tag; one before it belongs to a registry port.
        let last_slash = name_tag.rfind('/');
        let (name, tag) = match name_tag.rfind(':') {
            Some(colon) if last_slash.is_none_or(|sl| colon > sl) => {
                (&name_tag[..colon], Some(name_tag[colon + 1..].to_string()))
            }
            _ => (name_tag, None),
        };
        if let Some(t) = &tag {
            validate_tag(input, t)?;
        }
        let (registry, repository) = split_registry(name);
        if registry.is_empty() {
            return Err(invalid(input, "empty registry host"));
        }
        let registry = canonical_host(registry).map_err(|problem| invalid(input, problem))?;
        let mut repository = repository.to_string();
        if registry == DOCKER_HUB && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        validate_repository(input, &repository)?;
        Ok(ImageRef {
            location: Location::Registry {
                registry,
                repository,
            },
            tag,
            digest,
        })
    }

    fn parse_layout(input: &str, rest: &str) -> Result<Self, ReferenceError> {
        let (path_tag, digest) = match rest.rsplit_once('@') {
            Some((p, d)) => (
                p,
                Some(Digest::parse(d).map_err(|_| {
                    invalid(input, format!("{d:?} is not a digest like sha256:<64 hex>"))
                })?),
            ),
            None => (rest, None),
        };
        let last_slash = path_tag.rfind('/');
        let (path, tag) = match path_tag.rfind(':') {
            Some(colon) if last_slash.is_none_or(|sl| colon > sl) => {
                (&path_tag[..colon], Some(path_tag[colon + 1..].to_string()))
            }
            _ => (path_tag, None),
        };
        if path.is_empty() {
            return Err(invalid(input, "oci-layout: needs a directory path"));
        }
        if let Some(t) = &tag {
            validate_tag(input, t)?;
        }
        Ok(ImageRef {
            location: Location::Layout {
                path: normalize_path(path),
            },
            tag,
            digest,
        })
    }

    /// The same artifact, pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Self {
        ImageRef {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository, at `tag`, without a digest.
    pub fn with_tag(&self, tag: &str) -> Self {
        ImageRef {
            location: self.location.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        }
    }

    /// Where the artifact lives.
    pub fn location(&self) -> &Location {
        &self.location
    }
    /// The tag, if the reference names one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    /// The digest, if the reference names one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
    /// The registry host (canonical), for a registry reference.
    pub fn registry(&self) -> Option<&str> {
        match &self.location {
            Location::Registry { registry, .. } => Some(registry),
            Location::Layout { .. } => None,
        }
    }
    /// The repository path, for a registry reference.
    pub fn repository(&self) -> Option<&str> {
        match &self.location {
            Location::Registry { repository, .. } => Some(repository),
            Location::Layout { .. } => None,
        }
    }
    /// The layout directory, for an `oci-layout:` reference.
    pub fn layout_path(&self) -> Option<&Path> {
        match &self.location {
            Location::Layout { path } => Some(path),
            Location::Registry { .. } => None,
        }
    }

    /// The repository's full name without tag or digest: `registry/repository`, or
    /// `oci-layout:PATH`. Policies match on it and signatures name it as `docker-reference`.
    pub fn name(&self) -> String {
        match &self.location {
            Location::Registry {
                registry,
                repository,
            } => format!("{registry}/{repository}"),
            Location::Layout { path } => format!("{LAYOUT_PREFIX}{}", path.display()),
        }
    }

    /// Where a tag or digest of this repository can be fetched: the tag when there is no digest.
    pub fn reference_part(&self) -> Option<String> {
        match (&self.digest, &self.tag) {
            (Some(d), _) => Some(d.to_string()),
            (None, Some(t)) => Some(t.clone()),
            (None, None) => None,
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Whether the first component of a name is a registry host (Docker's rule): it has a '.' or
/// a ':' or is `localhost`. Otherwise the name is on Docker Hub.
pub fn is_host_component(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first.eq_ignore_ascii_case("localhost")
}

/// Split `name` into registry host (as written) and repository.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest)) if is_host_component(first) => (first, rest),
        _ => (DOCKER_HUB, name),
    }
}

/// The one spelling of a registry host that every consumer sees (policy match, cache keys,
/// signed-identity checks, credentials): lowercase, no trailing dot, no `:443` (the registry
/// protocol's default), Docker Hub's API hosts as `docker.io`. `Err` says what is wrong.
pub fn canonical_host(host: &str) -> Result<String, String> {
    let lower = host.to_ascii_lowercase();
    let (name, port) = if let Some(rest) = lower.strip_prefix('[') {
        // [IPv6]:port
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("registry host {host:?}: unterminated IPv6 address"))?;
        if addr.is_empty()
            || !addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(format!(
                "registry host {host:?} is not a valid IPv6 address"
            ));
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| {
                format!("registry host {host:?}: expected :PORT after the IPv6 address")
            })?),
        };
        (format!("[{addr}]"), port)
    } else {
        let (name, port) = match lower.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (lower.as_str(), None),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "registry host {host:?} is not a valid host name (letters, digits, '-' and '.')"
            ));
        }
        (name.to_string(), port)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && !p.starts_with('0') => (n != 443).then_some(n),
            _ => {
                return Err(format!(
                    "registry host {host:?}: {p:?} is not a port number"
                ));
            }
        },
    };
    let name = match name.as_str() {
        "index.docker.io" | "registry-1.docker.io" if port.is_none() => DOCKER_HUB.to_string(),
        _ => name,
    };
    Ok(match port {
        Some(p) => format!("{name}:{p}"),
        None => name,
    })
}

/// Whether `tag` is a valid tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`).
pub fn is_valid_tag(tag: &str) -> bool {
    validate_tag(tag, tag).is_ok()
}

fn validate_tag(input: &str, tag: &str) -> Result<(), ReferenceError> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            input,
            format!("{tag:?} is not a valid tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"),
        ))
    }
}

/// Repository path components per the distribution grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, joined by '/'.
fn validate_repository(input: &str, repo: &str) -> Result<(), ReferenceError> {
    if repo.is_empty() {
        return Err(invalid(input, "empty repository name"));
    }
    if repo.len() > 255 {
        return Err(invalid(input, "repository name longer than 255 characters"));
    }
    for comp in repo.split('/') {
        if !component_ok(comp) {
            let problem = if comp.bytes().any(|b| b.is_ascii_uppercase()) {
                format!("repository component {comp:?} must be lowercase")
            } else {
                format!(
                    "repository component {comp:?} is not valid (lowercase letters, digits, \
                     and . _ __ - between them)"
                )
            };
            return Err(invalid(input, problem));
        }
    }
    Ok(())
}

fn component_ok(comp: &str) -> bool {
    let b = comp.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // a separator run: ".", "_", "__", or one or more "-"
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &comp[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Lexical normalisation: drop `./` components and trailing slashes; no filesystem access.
fn normalize_path(p: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for comp in Path::new(p).components() {
        if comp != std::path::Component::CurDir {
            out.push(comp);
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_short_forms() {
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!(r.name(), "docker.io/library/nginx");
        assert_eq!(r.tag(), None);
        let r = ImageRef::parse("acme/app:1.2").unwrap();
        assert_eq!(r.name(), "docker.io/acme/app");
        assert_eq!(r.tag(), Some("1.2"));
        let r = ImageRef::parse("index.docker.io/library/busybox").unwrap();
        assert_eq!(r.name(), "docker.io/library/busybox");
    }

    #[test]
    fn one_spelling_per_host() {
        for (input, name) in [
            ("GHCR.IO/acme/app", "ghcr.io/acme/app"),
            ("Ghcr.Io/acme/app:v1", "ghcr.io/acme/app"),
            ("ghcr.io:443/acme/app", "ghcr.io/acme/app"),
            ("ghcr.io./acme/app", "ghcr.io/acme/app"),
            ("ghcr.io.:443/acme/app", "ghcr.io/acme/app"),
            ("DOCKER.IO/library/nginx", "docker.io/library/nginx"),
            ("Docker.io/nginx", "docker.io/library/nginx"),
            ("INDEX.DOCKER.IO/nginx", "docker.io/library/nginx"),
            ("registry-1.docker.io:443/acme/x", "docker.io/acme/x"),
            ("LOCALHOST:5000/app", "localhost:5000/app"),
            ("Localhost/app", "localhost/app"),
            ("[::1]:5000/app", "[::1]:5000/app"),
            ("[::1]:443/app", "[::1]/app"),
            ("127.0.0.1:5000/a", "127.0.0.1:5000/a"),
            ("r.io:8443/a", "r.io:8443/a"),
        ] {
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.name(), name, "{input}");
        }
        // Another port is another registry.
        assert_eq!(
            ImageRef::parse("ghcr.io:8443/a").unwrap().registry(),
            Some("ghcr.io:8443")
        );
        for bad in [
            "ghcr.io:0/a",
            "ghcr.io:99999/a",
            "ghcr.io:x/a",
            "gh_cr.io/a",
            "-ghcr.io/a",
            "ghcr..io/a",
            "[zz]:5000/a",
            "[::1/a",
            "ghcr.io:0443/a",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad} should be refused");
        }
        // Repository paths stay case-sensitive: uppercase is refused, not folded.
        let e = ImageRef::parse("ghcr.io/Acme/app").unwrap_err().to_string();
        assert!(e.contains("lowercase"), "{e}");
    }

    #[test]
    fn registry_with_port_tag_and_digest() {
        let r = ImageRef::parse(&format!("127.0.0.1:5000/a/b/c:v1@{D}")).unwrap();
        assert_eq!(r.registry(), Some("127.0.0.1:5000"));
        assert_eq!(r.repository(), Some("a/b/c"));
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.digest().map(Digest::as_str), Some(D));
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/a/b/c:v1@{D}"));
        let r = ImageRef::parse("localhost:5000/app").unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.registry(), Some("localhost:5000"));
        let r = ImageRef::parse("localhost/app:x").unwrap();
        assert_eq!(r.registry(), Some("localhost"));
    }

    #[test]
    fn layout_references() {
        let r = ImageRef::parse("oci-layout:./examples/hello/").unwrap();
        assert_eq!(r.layout_path(), Some(Path::new("examples/hello")));
        assert_eq!(r.name(), "oci-layout:examples/hello");
        let r = ImageRef::parse("oci-layout:/tmp/x:v1").unwrap();
        assert_eq!(r.tag(), Some("v1"));
        let r = ImageRef::parse(&format!("oci-layout:dir@{D}")).unwrap();
        assert_eq!(r.digest().map(Digest::as_str), Some(D));
        assert!(ImageRef::parse("oci-layout:").is_err());
    }

    #[test]
    fn malformed_references_say_what_is_wrong() {
        for (input, needle) in [
            ("", "empty"),
            ("Acme/App", "lowercase"),
            ("ghcr.io/acme/app:", "not a valid tag"),
            ("ghcr.io/acme/app@sha256:abc", "not a digest"),
            ("ghcr.io/acme/app@md5:abc", "not a digest"),
            ("https://ghcr.io/acme/app", "no scheme"),
            ("ghcr.io/acme//app", "not valid"),
            ("ghcr.io/acme/app-", "not valid"),
            ("ghcr.io/acme/a..b", "not valid"),
            ("ghcr.io/a b", "spaces"),
            ("ghcr.io/acme/app:-bad", "not a valid tag"),
            ("ghcr.io/acme/app\x1b[2J", "control characters"),
            ("./out/image", "did you mean oci-layout:./out/image?"),
            (
                "/var/lib/images/app",
                "did you mean oci-layout:/var/lib/images/app?",
            ),
            ("oci:///tmp/x", "did you mean oci-layout:/tmp/x?"),
            ("s3://bucket/app", "no scheme"),
        ] {
            let e = ImageRef::parse(input).unwrap_err().to_string();
            assert!(e.contains(needle), "{input:?}: {e}");
            assert!(e.contains(&format!("{input:?}")), "{e} names the input");
        }
    }

    #[test]
    fn oci_scheme_is_what_flux_and_helm_users_write() {
        let r = ImageRef::parse("oci://GHCR.io/acme/chart:1.2.3").unwrap();
        assert_eq!(r.to_string(), "ghcr.io/acme/chart:1.2.3");
        assert_eq!(r, ImageRef::parse("ghcr.io/acme/chart:1.2.3").unwrap());
    }

    #[test]
    fn repository_separators() {
        for ok in ["a__b", "a_b", "a.b", "a---b", "a-b/c.d/e__f"] {
            assert!(ImageRef::parse(&format!("r.io/{ok}")).is_ok(), "{ok}");
        }
        for bad in ["a___b", "a._b", "_a", "a/", "a.-b"] {
            assert!(ImageRef::parse(&format!("r.io/{bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests() {
        let d = Digest::parse(D).unwrap();
        assert_eq!(d.tag_prefix(), format!("sha256-{}", &D[7..]));
        assert!(Digest::parse("sha256:ABCDEF").is_err());
        let d = Digest::sha256_of(b"hello");
        assert!(d.matches(b"hello"));
        assert!(!d.matches(b"hellO"));
    }
}
