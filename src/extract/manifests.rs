//! Sets of manifest files (`verify --manifests`) and single objects (the webhook) → each distinct
//! OCI source once, with every place it was found, under the per-object limits. Pure: the caller
//! reads and parses the files and checks the sources; this module must not do either.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

use super::{
    Artifact, DocumentSet, MAX_ARTIFACTS_PER_OBJECT, MAX_IMAGE_FIELDS, Source, Unverified, extract,
    extract_kluctl_file, kluctl,
};

/// An object names more distinct artifacts than [`MAX_ARTIFACTS_PER_OBJECT`] (after its repeats
/// are folded): none of them is checked. The webhook and `verify --manifests` say the same words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the object names more than {max} distinct OCI artifacts (or more than {fields} image \
     fields) to check, more than one object may name; none was checked"
)]
#[non_exhaustive]
pub struct TooManyArtifacts {
    /// [`MAX_ARTIFACTS_PER_OBJECT`].
    pub max: usize,
    /// [`MAX_IMAGE_FIELDS`].
    pub fields: usize,
}

/// The sources of one object, each artifact ([`Source::key`]) once, in the object's order: the
/// paths of a repeat are added to the first one's `other_paths`. Keys in `skip` are left out (an
/// UPDATE's old object already ran them). More than [`MAX_ARTIFACTS_PER_OBJECT`] left: an error.
pub fn distinct_sources(
    sources: Vec<Source>,
    skip: &BTreeSet<String>,
) -> Result<Vec<Source>, TooManyArtifacts> {
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut out: Vec<Source> = Vec::new();
    for s in sources {
        let key = s.key();
        if skip.contains(&key) {
            continue;
        }
        match index.get(&key) {
            Some(&i) => {
                let first = &mut out[i];
                first.other_paths.push(s.path);
                first.other_paths.extend(s.other_paths);
            }
            None => {
                index.insert(key, out.len());
                out.push(s);
            }
        }
    }
    if out.len() > MAX_ARTIFACTS_PER_OBJECT {
        return Err(TooManyArtifacts {
            max: MAX_ARTIFACTS_PER_OBJECT,
            fields: MAX_IMAGE_FIELDS,
        });
    }
    Ok(out)
}

/// One OCI source of a set of manifests and every place it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundSource {
    /// `FILE KIND NAME PATH` for an object's field, `FILE PATH` for a Kluctl file's, in the
    /// order found.
    pub found_in: Vec<String>,
    /// The source as first found.
    pub source: Source,
}

/// What a set of manifest files makes the cluster fetch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifests {
    /// Each OCI source once (by [`Source::key`]), in the order first found. An object that
    /// cannot be read, or names too many artifacts, is one [`Artifact::Invalid`] source.
    pub sources: Vec<FoundSource>,
    /// What is fetched but not OCI, each with `FILE KIND NAME PATH` of where it was found.
    pub unverified: Vec<(String, Unverified)>,
}

impl Manifests {
    /// Adds `sources` found in `what` (an object or a file), merging each into an equal one
    /// found before.
    fn record(&mut self, index: &mut BTreeMap<String, usize>, what: &str, sources: Vec<Source>) {
        for source in sources {
            let found_in = std::iter::once(&source.path)
                .chain(&source.other_paths)
                .map(|p| {
                    if p.is_empty() {
                        what.to_string()
                    } else {
                        format!("{what} {p}")
                    }
                });
            let key = source.key();
            match index.get(&key) {
                Some(&i) => self.sources[i].found_in.extend(found_in),
                None => {
                    let found_in = found_in.collect();
                    index.insert(key, self.sources.len());
                    self.sources.push(FoundSource { found_in, source });
                }
            }
        }
    }
}

/// Whether a document is a Kubernetes object (it has `apiVersion` and `kind`); other
/// documents may be Kluctl project files.
fn is_object(d: &Value) -> bool {
    d.get("apiVersion").is_some() && d.get("kind").is_some()
}

/// The OCI sources of parsed manifest files, as the webhook would extract them one object at a
/// time: Kubernetes objects (Flux references followed within `files`, across namespaces only
/// with `cross_namespace_refs`), then the documents of Kluctl project files (`deployment.yaml`,
/// `helm-chart.yaml`; other files' non-object documents have no OCI sources).
pub async fn manifest_sources(
    files: &[(PathBuf, Vec<Value>)],
    cross_namespace_refs: bool,
) -> Manifests {
    let objects: Vec<(&PathBuf, &Value)> = files
        .iter()
        .flat_map(|(f, docs)| docs.iter().filter(|d| is_object(d)).map(move |d| (f, d)))
        .collect();
    let set = DocumentSet::new(objects.iter().map(|(_, d)| (*d).clone()).collect())
        .allow_cross_namespace_refs(cross_namespace_refs);
    let mut out = Manifests::default();
    let mut index = BTreeMap::new();
    for (file, d) in objects {
        let kind = d.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
        let name = d
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or("?");
        let what = format!("{} {kind} {name}", file.display());
        let (sources, unverified) = match extract(d, &set).await {
            Ok(x) => match distinct_sources(x.sources, &BTreeSet::new()) {
                Ok(sources) => (sources, x.unverified),
                Err(e) => (vec![invalid_source(&what, e.to_string())], Vec::new()),
            },
            Err(e) => (
                vec![invalid_source(&what, crate::error_chain(&e))],
                Vec::new(),
            ),
        };
        out.record(&mut index, &what, sources);
        let found_in = |u: &Unverified| format!("{what} {}", u.path);
        out.unverified
            .extend(unverified.into_iter().map(|u| (found_in(&u), u)));
    }
    for (file, d) in files
        .iter()
        .flat_map(|(f, docs)| docs.iter().filter(|d| !is_object(d)).map(move |d| (f, d)))
    {
        let base = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !kluctl::is_project_file(&base) {
            continue; // values files, kustomization fragments: no OCI sources
        }
        let what = file.display().to_string();
        let sources = match extract_kluctl_file(&base, d) {
            Ok(x) => distinct_sources(x.sources, &BTreeSet::new())
                .unwrap_or_else(|e| vec![invalid_source(&what, e.to_string())]),
            Err(e) => vec![invalid_source(&what, crate::error_chain(&e))],
        };
        out.record(&mut index, &what, sources);
    }
    out
}

/// The one source of `what` when none of its sources is checked: denied with `problem`.
fn invalid_source(what: &str, problem: String) -> Source {
    Source {
        path: String::new(),
        other_paths: Vec::new(),
        artifact: Artifact::Invalid {
            input: what.to_string(),
            problem,
        },
        flux_verify: None,
        flux: false,
        flux_verify_field: String::new(),
        via: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn pod(name: &str, images: &[&str]) -> Value {
        let containers: Vec<_> = images
            .iter()
            .enumerate()
            .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
            .collect();
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"containers": containers}})
    }

    fn deployment_file(n: usize) -> Value {
        let includes: Vec<_> = (0..n)
            .map(|i| json!({"oci": {"url": format!("oci://r.example/inc{i}"), "ref": {"tag": "v1"}}}))
            .collect();
        json!({"deployments": includes})
    }

    #[test]
    fn repeats_are_folded_into_the_first_and_skipped_keys_left_out() {
        let files = [(
            PathBuf::from("k/deployment.yaml"),
            vec![json!({"deployments": [
                {"oci": {"url": "oci://r.example/a", "ref": {"tag": "v1"}}},
                {"oci": {"url": "oci://r.example/b", "ref": {"tag": "v1"}}},
                {"oci": {"url": "oci://r.example/a", "ref": {"tag": "v1"}}},
            ]})],
        )];
        let x = extract_kluctl_file("deployment.yaml", &files[0].1[0]).unwrap();
        let keys: Vec<_> = x.sources.iter().map(Source::key).collect();
        let distinct = distinct_sources(x.sources.clone(), &BTreeSet::new()).unwrap();
        assert_eq!(distinct.len(), 2);
        assert_eq!(distinct[0].path, "deployments[0].oci.url");
        assert_eq!(distinct[0].other_paths, ["deployments[2].oci.url"]);
        let skip = BTreeSet::from([keys[0].clone()]);
        let rest = distinct_sources(x.sources, &skip).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].path, "deployments[1].oci.url");
    }

    #[test]
    fn a_source_found_twice_is_one_with_both_places() {
        let files = [
            (
                PathBuf::from("a.yaml"),
                vec![pod("one", &["r.example/app:v1", "r.example/side:v1"])],
            ),
            (
                PathBuf::from("b.yaml"),
                vec![pod("two", &["r.example/app:v1"]), json!({"values": 1})],
            ),
        ];
        let found = block_on(manifest_sources(&files, false));
        assert_eq!(found.sources.len(), 2, "{found:?}");
        assert_eq!(
            found.sources[0].found_in,
            [
                "a.yaml Pod one spec.containers[0].image",
                "b.yaml Pod two spec.containers[0].image"
            ]
        );
        assert!(found.unverified.is_empty());
    }

    #[test]
    fn only_kluctl_project_files_are_read_and_their_limit_is_the_webhooks() {
        let at_limit = [(
            PathBuf::from("p/deployment.yml"),
            vec![deployment_file(MAX_ARTIFACTS_PER_OBJECT)],
        )];
        let found = block_on(manifest_sources(&at_limit, false));
        assert_eq!(found.sources.len(), MAX_ARTIFACTS_PER_OBJECT);
        let past = [(
            PathBuf::from("p/deployment.yaml"),
            vec![deployment_file(MAX_ARTIFACTS_PER_OBJECT + 1)],
        )];
        let found = block_on(manifest_sources(&past, false));
        assert_eq!(found.sources.len(), 1);
        assert_eq!(found.sources[0].found_in, ["p/deployment.yaml"]);
        let Artifact::Invalid { input, problem } = &found.sources[0].source.artifact else {
            panic!("{found:?}");
        };
        assert_eq!(input, "p/deployment.yaml");
        assert!(
            problem.starts_with("the object names more than 256 distinct OCI artifacts"),
            "{problem}"
        );
        let values = [(PathBuf::from("p/values.yaml"), vec![deployment_file(3)])];
        assert_eq!(
            block_on(manifest_sources(&values, false)),
            Manifests::default()
        );
    }
}
