//! ocigate integration tests: one binary, modules by topic. The registry is a real CNCF
//! distribution (`/usr/bin/docker-registry`) on 127.0.0.1; peers (cosign, the shared corpus)
//! are used where present and reported loudly where not.

mod arguments;
mod attest;
mod attestation_discovery;
mod attestation_policy;
mod attestations;
mod audit;
mod auth;
mod bounds;
mod bundles;
mod cli_output;
mod client_auth;
mod cluster;
mod corpus;
mod cosign_peer;
mod credentials;
mod day_one;
mod engine;
mod examples;
mod faults;
mod flux_refs;
mod harness;
mod hostile_webhook;
mod image;
mod image_volumes;
mod kinds;
mod limits;
mod manifests;
mod manifests_parity;
mod metrics;
mod namespaces;
mod pipes;
mod pki;
mod pki_ca;
mod platforms;
mod proxy;
mod referrers;
mod revocation;
mod roundtrip;
mod sigrepo;
mod tls;
mod token;
mod tuf;
mod tuf_refresh;
mod webhook;
