#!/usr/bin/env bash
# Fetch cosign (Debian unstable's package) into a cache directory without installing anything
# system-wide, and print the path of the binary. Used by the test set-up; safe to run repeatedly.
#   scripts/fetch-cosign.sh [CACHE_DIR]    (default: .cache/cosign under the repository)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-$here/.cache/cosign}
bin=$cache/root/usr/bin/cosign
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
mkdir -p "$cache"/{lists/partial,archives/partial,debs}

# The mirror URI comes from the system's own sources (deb822 or one-line format); no host is hard-coded.
uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
if [ -z "$uri" ]; then
  uri=$(awk '$1=="deb" && $2 !~ /^\[/ {print $2; exit} $1=="deb" && $2 ~ /^\[/ {print $3; exit}' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
fi
[ -n "$uri" ] || { echo "fetch-cosign: no Debian mirror URI found in /etc/apt/sources.list*" >&2; exit 1; }
# Debian's security mirror does not carry sid; use the main archive URI.
uri=${uri%-security}

cat > "$cache/sid.sources" <<SRC
Types: deb
URIs: $uri
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$cache" -o "Dir::State::Lists=$cache/lists"
      -o "Dir::Cache=$cache" -o "Dir::Cache::archives=$cache/archives" -o "APT::Sandbox::User=root"
      -o "Debug::NoLocking=1" -o "Dir::State::status=/var/lib/dpkg/status")
apt-get "${opts[@]}" -qq update >&2
(cd "$cache/debs" && apt-get "${opts[@]}" -qq download cosign >&2)
deb=$(ls "$cache"/debs/cosign_*.deb | head -n1)
dpkg-deb -x "$deb" "$cache/root"
[ -x "$bin" ] || { echo "fetch-cosign: $deb did not contain usr/bin/cosign" >&2; exit 1; }
echo "$bin"
