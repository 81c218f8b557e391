#!/usr/bin/env bash
# Builds ocigate's container image without a daemon and without pulling anything: from scratch,
# with Debian's umoci, the layout the Containerfile's final stage has (the Containerfile runs this
# script with --rootfs-only, so the two cannot drift):
#   /usr/local/bin/ocigate                 the release binary (cargo build --release --locked)
#   the shared libraries it needs          resolved with ldd from the host's Debian packages,
#                                          at the paths ldd names (the loader at its ELF path)
#   /etc/ssl/certs/ca-certificates.crt     from Debian's ca-certificates
#   /etc/passwd, /etc/group                root and the non-root user nonroot (65532:65532)
#   /etc/nsswitch.conf                     "hosts: files dns" (/etc/hosts before DNS)
#   /tmp                                   empty, 1777
# Image config: USER 65532:65532, ENTRYPOINT ["/usr/local/bin/ocigate"], PATH, and the OCI labels
# org.opencontainers.image.{source,version,revision,title,description,licenses}.
#
# Usage: scripts/build-image.sh [--binary PATH] [--output DIR] [--push REF [--sign-key KEY]]
#   --binary PATH      put this ocigate binary in the image instead of building the release one
#   --output DIR       write the image as an OCI image layout at DIR (tagged --tag)
#   --tag TAG          the layout's tag (default: v<version of Cargo.toml>)
#   --push REF         push to REF (registry/repository[:tag]) with skopeo; prints REPOSITORY@DIGEST
#                      on stdout (nothing else goes there)
#   --digest-file F    also write the pushed digest (sha256:…) to F
#   --insecure         the registry of --push speaks plain HTTP or has a certificate not to verify
#   --sign-key KEY     after --push: `ocigate sign` the pushed digest with KEY (cosign's encrypted
#                      key format; password from OCIGATE_PASSWORD or COSIGN_PASSWORD), then
#                      `ocigate attest` a SLSA v1 provenance of this build (source revision,
#                      builder, command, every file's package and digest)
#   --rootfs-only DIR  only assemble the root filesystem at DIR (what the Containerfile copies)
# Environment: OCIGATE_IMAGE_SOURCE (default: the git remote origin, else
# https://github.com/ocigate/ocigate), OCIGATE_BUILDER_ID (the provenance's builder.id; default
# urn:ocigate:build-image:<hostname>), SOURCE_DATE_EPOCH (file times and the image's creation
# time; default: the commit's time), CARGO_TARGET_DIR.
# Registry credentials: skopeo and ocigate both read Docker's config.json and podman's auth.json.
# Installs umoci, skopeo (for --push) and ca-certificates with apt-get when they are missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { echo "build-image: $*" >&2; }
die() { say "$*"; exit 1; }

binary="" output="" tag="" push="" digest_file="" insecure=false sign_key="" rootfs_only=""
command_line=("scripts/build-image.sh" "$@")
while [[ $# -gt 0 ]]; do
    case $1 in
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        --output) output=${2:?--output needs a directory}; shift 2 ;;
        --tag) tag=${2:?--tag needs a value}; shift 2 ;;
        --push) push=${2:?--push needs a reference}; shift 2 ;;
        --digest-file) digest_file=${2:?--digest-file needs a path}; shift 2 ;;
        --insecure) insecure=true; shift ;;
        --sign-key) sign_key=${2:?--sign-key needs a key file}; shift 2 ;;
        --rootfs-only) rootfs_only=${2:?--rootfs-only needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
if [[ -z "$rootfs_only" && -z "$output" && -z "$push" ]]; then
    die "nothing to do: give --output DIR and/or --push REF (or --rootfs-only DIR)"
fi
[[ -z "$sign_key" || -n "$push" ]] || die "--sign-key signs what --push pushed: give --push REF"
[[ -z "$sign_key" || -r "$sign_key" ]] || die "cannot read the key $sign_key"
[[ -z "$binary" || -x "$binary" ]] || die "not an executable: $binary"

# --- tools (apt-get only for what is missing, as scripts/test.sh does) ---
need_packages() {
    local missing=()
    [[ -n "$rootfs_only" ]] || command -v umoci >/dev/null || missing+=(umoci)
    [[ -z "$push" ]] || command -v skopeo >/dev/null || missing+=(skopeo)
    [[ -s /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
    command -v ldd >/dev/null || missing+=(libc-bin)
    [[ ${#missing[@]} -eq 0 ]] && return
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    local as_root=""
    [[ "$(id -u)" -eq 0 ]] || as_root="sudo"
    say "installing ${missing[*]} (apt-get)"
    $as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}
need_packages

# --- what is built, from what ---
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
[[ -n "$version" ]] || die "no version in Cargo.toml"
tag=${tag:-v$version}
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
dirty=false
if [[ "$revision" != unknown && -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    dirty=true
fi
source_url=${OCIGATE_IMAGE_SOURCE:-$(git -C "$root" remote get-url origin 2>/dev/null || true)}
source_url=${source_url:-https://github.com/ocigate/ocigate}
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)

binary_from="given with --binary"
if [[ -z "$binary" ]]; then
    binary_from="cargo build --release --locked"
    say "cargo build --release --locked (a few minutes the first time)"
    (cd "$root" && cargo build --release --locked --bin ocigate >&2)
    binary=${CARGO_TARGET_DIR:-$root/target}/release/ocigate
    [[ -x "$binary" ]] || die "cargo built no $binary"
fi

# The shared libraries $1 loads, as ldd resolves them (the loader included): one path a line.
shared_libraries() {
    local out
    if ! out=$(LC_ALL=C ldd "$1" 2>&1); then
        [[ "$out" == *"not a dynamic executable"* ]] && return 0
        die "ldd $1: $out"
    fi
    if grep -q "not found" <<<"$out"; then
        die "ldd $1: a library is missing on this machine: $out"
    fi
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out" | sort -u
}

# The root filesystem at $2 for the binary $1 (the directory must not exist or be empty).
assemble_rootfs() {
    local bin=$1 dir=$2 lib
    mkdir -p "$dir"
    [[ -z "$(ls -A "$dir")" ]] || die "$dir is not empty"
    install -D -m 0755 "$bin" "$dir/usr/local/bin/ocigate"
    while read -r lib; do
        install -D -m 0755 "$(readlink -f "$lib")" "$dir$lib"
    done < <(shared_libraries "$bin")
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
    printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin\n' \
        >"$dir/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
    printf 'hosts: files dns\n' >"$dir/etc/nsswitch.conf"
    chmod 0644 "$dir/etc/passwd" "$dir/etc/group" "$dir/etc/nsswitch.conf"
    mkdir -m 1777 "$dir/tmp"
    find "$dir" -mindepth 1 -type d ! -path "$dir/tmp" -exec chmod 0755 {} +
    find "$dir" -exec touch -h -d "@$epoch" {} +
}

if [[ -n "$rootfs_only" ]]; then
    assemble_rootfs "$binary" "$rootfs_only"
    say "root filesystem at $rootfs_only"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
assemble_rootfs "$binary" "$rootfs"

# --- the image: an OCI layout made with umoci, one layer ---
layout=$work/layout
rootless=()
[[ "$(id -u)" -eq 0 ]] || rootless=(--rootless)   # files owned by root in the image either way
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
# unpack (an empty bundle), fill, repack: `umoci insert` 0.4.7 leaves the layer's tar stream
# without its end (the last file's padding and the end-of-archive blocks), which Go's tar reader,
# and so containerd, refuse.
umoci unpack "${rootless[@]}" --image "$layout:$tag" "$work/bundle" >/dev/null
cp -a "$rootfs/." "$work/bundle/rootfs/"
umoci repack --image "$layout:$tag" --history.created "$created" \
    --history.created_by "scripts/build-image.sh (ocigate $version, $revision)" "$work/bundle"
label() { printf -- '--config.label=org.opencontainers.image.%s=%s\n' "$1" "$2"; }
mapfile -t labels < <(
    label title ocigate
    label description "Signing and verification gate for OCI artifacts (cosign-compatible)"
    label licenses Apache-2.0
    label source "$source_url"
    label version "$version"
    label revision "$revision"
)
umoci config --image "$layout:$tag" --no-history --created "$created" --os linux --architecture amd64 \
    --config.user 65532:65532 --config.entrypoint /usr/local/bin/ocigate \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${labels[@]}"
umoci gc --layout "$layout"

if [[ -n "$output" ]]; then
    if [[ -e "$output" && -n "$(ls -A "$output" 2>/dev/null)" && ! -f "$output/oci-layout" ]]; then
        die "$output exists and is not an OCI image layout: not replacing it"
    fi
    rm -rf "$output"
    mkdir -p "$(dirname "$output")"
    cp -r "$layout" "$output"
    say "OCI image layout at $output (tag $tag)"
fi

[[ -n "$push" ]] || exit 0

# --- push, then sign and attest what was pushed ---
tls=()
ocigate_registry=()
if $insecure; then
    tls=(--dest-tls-verify=false)
    ocigate_registry=(--allow-insecure-registry)
fi
say "pushing to $push"
skopeo copy --quiet "${tls[@]}" --digestfile "$work/digest" "oci:$layout:$tag" "docker://$push" >&2
digest=$(cat "$work/digest")
[[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || die "skopeo wrote no digest: $digest"
repository=${push%@*}
last=${repository##*/}
[[ "$last" == *:* ]] && repository=${repository%:*}
pinned=$repository@$digest
say "pushed $pinned"
[[ -z "$digest_file" ]] || echo "$digest" >"$digest_file"

if [[ -n "$sign_key" ]]; then
    "$binary" sign "$pinned" --key "$sign_key" "${ocigate_registry[@]}" >&2
    json() { # a JSON string
        local s=$1
        [[ "$s" != *[$'\001'-$'\037']* ]] || die "a control character in a provenance value: $s"
        s=${s//\\/\\\\}
        printf '"%s"' "${s//\"/\\\"}"
    }
    dependency() { # $1: path in the image; $2: the file on this machine
        local sha pkg ver arch uri=""
        sha=$(sha256sum "$2" | cut -d' ' -f1)
        case $1 in
            /etc/ssl/certs/ca-certificates.crt) pkg=ca-certificates ;;
            /usr/local/*|/etc/*) pkg="" ;;
            *) pkg=$(dpkg -S "$1" 2>/dev/null | head -n 1 | cut -d: -f1) || pkg="" ;;
        esac
        if [[ -n "$pkg" ]] && dpkg-query -W "$pkg" >/dev/null 2>&1; then
            read -r ver arch < <(dpkg-query -W -f='${Version} ${Architecture}\n' "$pkg" | head -n 1)
            uri=", \"uri\": $(json "pkg:deb/debian/$pkg@$ver?arch=$arch")"
        fi
        printf '{"name": %s%s, "digest": {"sha256": "%s"}}' "$(json "$1")" "$uri" "$sha"
    }
    deps=("{\"uri\": $(json "git+$source_url@$revision"), \"digest\": {\"gitCommit\": $(json "$revision")}}")
    while read -r f; do
        deps+=("$(dependency "/${f#./}" "$rootfs/${f#./}")")
    done < <(cd "$rootfs" && find . -type f | sort)
    cmd=()
    for a in "${command_line[@]}"; do cmd+=("$(json "$a")"); done
    predicate=$work/provenance.json
    cat >"$predicate" <<EOF
{
  "buildDefinition": {
    "buildType": "https://ocigate.dev/buildtypes/build-image/v1",
    "externalParameters": {
      "source": {"uri": $(json "$source_url"), "revision": $(json "$revision"), "dirty": $dirty},
      "version": $(json "$version"),
      "command": [$(IFS=,; echo "${cmd[*]}")]
    },
    "internalParameters": {"binary": $(json "$binary_from"), "umoci": $(json "$(umoci --version)")},
    "resolvedDependencies": [$(IFS=,; echo "${deps[*]}")]
  },
  "runDetails": {
    "builder": {"id": $(json "${OCIGATE_BUILDER_ID:-urn:ocigate:build-image:$(uname -n)}")},
    "metadata": {"invocationId": $(json "$pinned"), "startedOn": "$started", "finishedOn": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"}
  }
}
EOF
    "$binary" attest "$pinned" --key "$sign_key" --type slsaprovenance1 --predicate "$predicate" \
        "${ocigate_registry[@]}" >&2
fi
echo "$pinned"
