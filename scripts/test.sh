#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine. Installs what it needs:
#   - the CNCF distribution registry (Debian package docker-registry), used by the integration tests;
#   - nginx (Debian package nginx-light), as a basic-auth proxy in front of a registry;
#   - python3-venv (Debian), for the deploy/ validation tools (scripts/validate-deploy.sh);
#   - time (Debian: GNU time), with which the tests read the peak memory of an ocigate process;
#   - prometheus (Debian), for promtool: the monitoring overlay's alerts (scripts/validate-deploy.sh);
#   - cosign 3.1.1 from Debian unstable, unpacked into the tools cache (nothing installed system-wide);
#   - ferro-oci-server 1.0.0 (crates.io), a registry with the OCI 1.1 referrers API, into the tools cache.
# The tools cache is outside the clone: ${OCIGATE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ocigate-tools}.
# Needs a Rust toolchain (rustup, stable >= 1.89) with clippy and rustfmt.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || {
  echo "test.sh: cargo not found. Install Rust with rustup (https://rustup.rs): curl https://sh.rustup.rs -sSf | sh" >&2
  exit 1
}

tools=${OCIGATE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ocigate-tools}
mkdir -p "$tools"

if [ ! -x /usr/bin/docker-registry ] || [ ! -x /usr/sbin/nginx ] || [ ! -x /usr/bin/time ] || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo"
  echo "test.sh: installing docker-registry, nginx-light, python3-venv and time (apt-get)" >&2
  $as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq docker-registry nginx-light python3-venv time >/dev/null
  # The packages start system services (a registry on :5000, nginx on :80); the tests start
  # their own on free loopback ports, so stop them.
  for svc in docker-registry nginx; do
    ($as_root systemctl stop $svc 2>/dev/null || $as_root service $svc stop 2>/dev/null) || true
  done
fi

# The image test (tests/it/image.rs runs scripts/build-image.sh): umoci and skopeo (Debian).
if ! command -v umoci >/dev/null || ! command -v skopeo >/dev/null; then
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo"
  echo "test.sh: installing umoci and skopeo (apt-get)" >&2
  $as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq umoci skopeo >/dev/null
fi

# promtool checks the monitoring overlay's alerts (validate-deploy.sh). The package's service is
# not wanted: the tests start what they need.
if ! command -v promtool >/dev/null; then
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo"
  echo "test.sh: installing prometheus (for promtool; apt-get)" >&2
  $as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  ($as_root systemctl stop prometheus 2>/dev/null || $as_root service prometheus stop 2>/dev/null) || true
fi

OCIGATE_TEST_COSIGN=$(scripts/fetch-cosign.sh "$tools/cosign") || {
  echo "test.sh: could not fetch cosign from Debian unstable (see above)" >&2
  exit 1
}
export OCIGATE_TEST_COSIGN

# A second registry that serves the OCI 1.1 referrers API (docker-registry 2.8 has none).
if [ ! -x "$tools/ferro/bin/ferro-oci-server" ]; then
  echo "test.sh: installing ferro-oci-server 1.0.0 from crates.io into $tools/ferro" >&2
  cargo install --quiet --locked --version 1.0.0 --root "$tools/ferro" ferro-oci-server
fi
export OCIGATE_TEST_FERRO=$tools/ferro/bin/ferro-oci-server

# Kubernetes' own admission code (kwhclient, mini-kube-apiserver) for the webhook tests, built once
# from Debian's k8s.io Go packages into ~/.cache/ocigate-kube (cold: about 8 minutes).
if [ -x ../shared/tools/kube/setup.sh ]; then
  OCIGATE_TEST_KUBE=$(../shared/tools/kube/setup.sh | tail -n 1)
  export OCIGATE_TEST_KUBE
fi

# deploy/ renders with kustomize and every object validates against the Kubernetes schemas.
scripts/validate-deploy.sh
# The kubectl it installed drives the mini API server in the cluster tests.
export OCIGATE_TEST_KUBECTL=$tools/venv/bin/kubectl
# ... and its python, with prometheus_client, parses a live /metrics scrape (tests/it/metrics.rs).
export OCIGATE_TEST_PYTHON=$tools/venv/bin/python
# python-tuf (the TUF reference implementation) writes the TUF repositories of tests/it/tuf.rs
# (scripts/tuf-repo.py); installed beside the tools above, without rebuilding the venv.
if ! "$OCIGATE_TEST_PYTHON" -c 'import tuf.api.metadata, cryptography' 2>/dev/null; then
  echo "test.sh: installing python-tuf into $tools/venv" >&2
  "$OCIGATE_TEST_PYTHON" -m pip install --quiet --disable-pip-version-check 'tuf==7.0.1' 'cryptography>=44'
fi

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked -- --show-output
