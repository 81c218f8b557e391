#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine. Installs what it needs:
#   - the CNCF distribution registry (Debian package docker-registry), used by the integration tests;
#   - nginx (Debian package nginx-light), as a basic-auth proxy in front of a registry;
#   - cosign 3.1.1 from Debian unstable, unpacked into .cache/cosign (nothing installed system-wide);
#   - ferro-oci-server 1.0.0 (crates.io), a registry with the OCI 1.1 referrers API, into .cache/ferro.
# Needs a Rust toolchain (rustup, stable >= 1.88) with clippy and rustfmt.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || {
  echo "test.sh: cargo not found. Install Rust with rustup (https://rustup.rs): curl https://sh.rustup.rs -sSf | sh" >&2
  exit 1
}

if [ ! -x /usr/bin/docker-registry ] || [ ! -x /usr/sbin/nginx ]; then
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo"
  echo "test.sh: installing docker-registry and nginx-light (apt-get)" >&2
  $as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq docker-registry nginx-light >/dev/null
  # The packages start system services (a registry on :5000, nginx on :80); the tests start
  # their own on free loopback ports, so stop them.
  for svc in docker-registry nginx; do
    ($as_root systemctl stop $svc 2>/dev/null || $as_root service $svc stop 2>/dev/null) || true
  done
fi

OCIGATE_TEST_COSIGN=$(scripts/fetch-cosign.sh) || {
  echo "test.sh: could not fetch cosign from Debian unstable (see above)" >&2
  exit 1
}
export OCIGATE_TEST_COSIGN

# A second registry that serves the OCI 1.1 referrers API (docker-registry 2.8 has none).
if [ ! -x .cache/ferro/bin/ferro-oci-server ]; then
  echo "test.sh: installing ferro-oci-server 1.0.0 from crates.io into .cache/ferro" >&2
  cargo install --quiet --locked --version 1.0.0 --root .cache/ferro ferro-oci-server
fi
export OCIGATE_TEST_FERRO=$PWD/.cache/ferro/bin/ferro-oci-server

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked -- --show-output
