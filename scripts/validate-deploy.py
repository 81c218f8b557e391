"""Offline checks of the rendered deploy/ manifests; run by scripts/validate-deploy.sh.

Usage: validate-deploy.py K8S_VERSIONS NAME=RENDERED.yaml...
  K8S_VERSIONS: comma-separated Kubernetes versions to validate against (kubernetes-validate, strict).
  NAME: the kustomization rendered ("deploy", "overlays/cert-manager", ...).

Every object of a built-in kind is validated with kubernetes-validate in strict mode (unknown fields
are errors). Objects of CRD-typed kinds (cert-manager's Issuer and Certificate, the Prometheus
Operator's ServiceMonitor and PrometheusRule) have no schema there: they get the structural checks
below instead, and the summary line says so (promtool checks the alerts: validate-deploy.sh). Then the invariants of
the ocigate installation are asserted. Prints nothing but a summary line on success; on any failure
prints every problem found and exits 1.
"""

import json
import os
import re
import sys

import kubernetes_validate
import yaml

NAMESPACE = "ocigate-system"
EXCLUDED_NAMESPACES = {"ocigate-system", "kube-system"}
TLS_SECRET = "ocigate-tls"
SERVICE_DNS = {"ocigate.ocigate-system.svc", "ocigate.ocigate-system.svc.cluster.local"}
INJECT_CA = "cert-manager.io/inject-ca-from"
CRD_GROUPS_WITHOUT_SCHEMA = {"cert-manager.io", "monitoring.coreos.com"}
DOCS_METRICS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "metrics.md")
DASHBOARD_CM = "ocigate-grafana-dashboard"

CU = ("CREATE", "UPDATE")
# (apiGroup, apiVersions, resources, operations): the exact coverage of the validating webhook.
VALIDATING_RULES = [
    ("", ["v1"], ["pods"], CU),
    ("", ["v1"], ["pods/ephemeralcontainers"], ("UPDATE",)),
    ("apps", ["v1"], ["deployments", "replicasets", "statefulsets", "daemonsets"], CU),
    ("batch", ["v1"], ["jobs", "cronjobs"], CU),
    ("", ["v1"], ["replicationcontrollers"], CU),
    ("source.toolkit.fluxcd.io", ["v1", "v1beta2"],
     ["ocirepositories", "helmcharts", "helmrepositories"], CU),
    ("helm.toolkit.fluxcd.io", ["v2", "v2beta1", "v2beta2"], ["helmreleases"], CU),
    ("gitops.kluctl.io", ["v1beta1"], ["kluctldeployments"], CU),
]
MUTATING_RULES = VALIDATING_RULES[:2]

# `serve --pod-template-preset NAME` -> the (apiGroup, apiVersions, resources) the validating
# webhook must add for it, as src/extract/custom.rs's `Preset` configures them (plural names
# from each project's CRDs).
PRESET_RULES = {
    "argo-rollout": [("argoproj.io", ["v1alpha1"], ["rollouts"])],
    "knative-service": [("serving.knative.dev", ["v1"], ["services"])],
    "keda-scaledjob": [("keda.sh", ["v1alpha1"], ["scaledjobs"])],
    "openkruise-cloneset": [("apps.kruise.io", ["v1alpha1"], ["clonesets"])],
    "openkruise-statefulset": [("apps.kruise.io", ["v1beta1", "v1alpha1"], ["statefulsets"])],
    "openkruise-daemonset": [("apps.kruise.io", ["v1alpha1"], ["daemonsets"])],
}


def preset_rules(args):
    """The rules the `--pod-template-preset` values among `args` need (unknown names: None)."""
    rules = []
    for flag, value in zip(args, args[1:]):
        if flag == "--pod-template-preset":
            if value not in PRESET_RULES:
                return None
            rules += [(g, v, r, CU) for g, v, r in PRESET_RULES[value]]
    return rules

# (apiGroup, resource) -> verbs: the exact permissions of the ClusterRole.
RBAC = {
    ("", "secrets"): {"get"},
    ("", "serviceaccounts"): {"get"},
    ("", "namespaces"): {"get"},
    ("source.toolkit.fluxcd.io", "ocirepositories"): {"get"},
    ("source.toolkit.fluxcd.io", "helmcharts"): {"get", "list"},
    ("source.toolkit.fluxcd.io", "helmrepositories"): {"get"},
}

# What deploy/overlays/audit adds to the ClusterRole (serve --audit-interval).
AUDIT_RBAC = {
    ("", "pods"): {"list", "watch"},
    ("source.toolkit.fluxcd.io", "ocirepositories"): {"get", "list", "watch"},
    ("source.toolkit.fluxcd.io", "helmcharts"): {"get", "list", "watch"},
    ("helm.toolkit.fluxcd.io", "helmreleases"): {"list", "watch"},
    ("gitops.kluctl.io", "kluctldeployments"): {"list", "watch"},
    ("apps", "replicasets"): {"get"},
    ("batch", "jobs"): {"get"},
    ("wgpolicyk8s.io", "policyreports"): {"get", "list", "create", "update"},
    ("wgpolicyk8s.io", "clusterpolicyreports"): {"get", "create", "update"},
}

# The audit's Role in ocigate-system: the Lease, by name except for create.
AUDIT_LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["ocigate-audit"],
     "verbs": ["get", "update"]},
]

SERVE_ARGS = [
    "serve",
    "--policy", "/etc/ocigate/policy/policy.yaml",
    "--tls-cert", "/etc/ocigate/tls/tls.crt",
    "--tls-key", "/etc/ocigate/tls/tls.key",
    "--listen", "0.0.0.0:8443",
    "--metrics-listen", "0.0.0.0:9090",
]

# Which optional parts each rendered kustomization must contain.
VARIANTS = {
    "deploy": {"cert_manager": False, "mutating": True},
    "overlays/cert-manager": {"cert_manager": True, "mutating": True},
    "overlays/validating-only": {"cert_manager": False, "mutating": False},
    # The first days of a rollout (docs/rollout.md): an outage admits instead of rejecting.
    "overlays/fail-open": {"cert_manager": False, "mutating": True, "failure_policy": "Ignore"},
    # policy-controller's habit: only namespaces labelled ocigate.dev/enforce: "true" are checked.
    "overlays/opt-in": {"cert_manager": False, "mutating": True, "opt_in": True},
    "overlays/pinned-image": {"cert_manager": False, "mutating": True, "pinned": True},
    "overlays/monitoring": {"cert_manager": False, "mutating": True, "monitoring": True},
    # Every preset's custom kind checked (serve --pod-template-preset), and its webhook rule.
    "overlays/custom-kinds": {"cert_manager": False, "mutating": True, "presets": sorted(PRESET_RULES)},
    # serve --audit-interval: PolicyReports written by the replica holding the Lease.
    "overlays/audit": {"cert_manager": False, "mutating": True, "audit": True},
    # serve --client-ca: reviews only from the API server's client certificate.
    "overlays/client-auth": {"cert_manager": False, "mutating": True, "client_auth": True},
}
IMAGE = "ghcr.io/ocigate/ocigate"
# Namespace labels the webhooks' namespaceSelector reads (deploy/README.md).
IGNORE_LABEL = "ocigate.dev/ignore"
ENFORCE_LABEL = "ocigate.dev/enforce"


def documented_metrics():
    """The metric names of docs/metrics.md's table."""
    with open(DOCS_METRICS) as f:
        return {m.group(1) for m in re.finditer(r"^\| `([a-z_]+)` \|", f.read(), re.M)}


def metrics_used(expr):
    """The ocigate_/process_ metric names a PromQL expression reads (histogram suffixes cut)."""
    names = set(re.findall(r"\b((?:ocigate|process)_[a-z_]+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) if n.endswith(("_bucket", "_sum", "_count")) and
            not n.endswith("_total") else n for n in names}


def expand(rules):
    """A set of (group, version, resource, operation, scope) tuples."""
    out = set()
    for group, versions, resources, ops, *scope in rules:
        for v in versions:
            for r in resources:
                for op in ops:
                    out.add((group, v, r, op, scope[0] if scope else "Namespaced"))
    return out


def expand_manifest(rules):
    out = set()
    for r in rules or []:
        for g in r.get("apiGroups", []):
            for v in r.get("apiVersions", []):
                for res in r.get("resources", []):
                    for op in r.get("operations", []):
                        out.add((g, v, res, op, r.get("scope", "*")))
    return out


class Checker:
    def __init__(self, versions):
        self.versions = versions
        self.problems = []
        self.validated = {}  # canonical JSON of an object -> None (validated once per version set)
        self.skipped_kinds = set()
        self.objects = 0

    def fail(self, where, msg):
        self.problems.append(f"{where}: {msg}")

    def check(self, where, cond, msg):
        if not cond:
            self.fail(where, msg)
        return cond

    # -- schema validation -------------------------------------------------------------------
    def schema(self, name, obj):
        where = f"{name}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        group = obj.get("apiVersion", "").rpartition("/")[0]
        if group in CRD_GROUPS_WITHOUT_SCHEMA:
            self.skipped_kinds.add(f"{obj['kind']}.{group}")
            return
        key = json.dumps(obj, sort_keys=True)
        if key in self.validated:
            return
        self.validated[key] = None
        for v in self.versions:
            try:
                kubernetes_validate.validate(obj, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                self.fail(where, f"Kubernetes {v} schema (strict): {e.message} at /{path}")
            except kubernetes_validate.SchemaNotFoundError:
                self.fail(where, f"no Kubernetes {v} schema for {obj.get('apiVersion')} "
                          f"{obj.get('kind')}: add a schema check or list its group as CRD-typed")

    # -- invariants --------------------------------------------------------------------------
    def webhook_config(self, name, obj, expected_rules, path, cert_manager, failure_policy="Fail", opt_in=False):
        kind = obj["kind"]
        where = f"{name}: {kind}/{obj['metadata']['name']}"
        ann = obj["metadata"].get("annotations", {}) or {}
        if cert_manager:
            self.check(where, ann.get(INJECT_CA) == f"{NAMESPACE}/{TLS_SECRET}",
                       f"annotation {INJECT_CA} must be {NAMESPACE}/{TLS_SECRET}, got {ann.get(INJECT_CA)!r}")
        else:
            self.check(where, INJECT_CA not in ann, f"unexpected {INJECT_CA} without cert-manager")
        hooks = obj.get("webhooks") or []
        if not self.check(where, len(hooks) == 1, f"expected exactly 1 webhook, got {len(hooks)}"):
            return
        w = hooks[0]
        self.check(where, w.get("failurePolicy") == failure_policy,
                   f"failurePolicy must be {failure_policy}, got {w.get('failurePolicy')!r}")
        self.check(where, w.get("timeoutSeconds") == 10, f"timeoutSeconds must be 10, got {w.get('timeoutSeconds')!r}")
        self.check(where, w.get("sideEffects") == "None", f"sideEffects must be None, got {w.get('sideEffects')!r}")
        self.check(where, w.get("matchPolicy") == "Equivalent", f"matchPolicy must be Equivalent, got {w.get('matchPolicy')!r}")
        self.check(where, w.get("admissionReviewVersions") == ["v1"],
                   f"admissionReviewVersions must be [v1], got {w.get('admissionReviewVersions')!r}")
        self.check(where, "objectSelector" not in w, "objectSelector must not be set (Pods could opt out by label)")
        if kind == "MutatingWebhookConfiguration":
            # IfNeeded: a mutating webhook after ocigate's that changes an image gets it pinned.
            self.check(where, w.get("reinvocationPolicy") == "IfNeeded",
                       f"reinvocationPolicy must be IfNeeded, got {w.get('reinvocationPolicy')!r}")
        svc = (w.get("clientConfig") or {}).get("service") or {}
        self.check(where, (svc.get("namespace"), svc.get("name"), svc.get("path"), svc.get("port", 443))
                   == (NAMESPACE, "ocigate", path, 443),
                   f"clientConfig.service must be {NAMESPACE}/ocigate:443{path}, got {svc!r}")
        if not cert_manager:
            self.check(where, "caBundle" not in (w.get("clientConfig") or {}),
                       "the base must not ship a caBundle (it is the installer's CA)")
        sel = w.get("namespaceSelector") or {}
        exprs = sel.get("matchExpressions") or []
        excluded = set()
        for e in exprs:
            if e.get("key") == "kubernetes.io/metadata.name" and e.get("operator") == "NotIn":
                excluded |= set(e.get("values") or [])
        ignore = {"key": IGNORE_LABEL, "operator": "NotIn", "values": ["true"]}
        want = [ignore] + ([{"key": ENFORCE_LABEL, "operator": "In", "values": ["true"]}] if opt_in else [])
        rest = [e for e in exprs if e.get("key") != "kubernetes.io/metadata.name"]
        self.check(where, excluded == EXCLUDED_NAMESPACES and rest == want and not sel.get("matchLabels"),
                   f"namespaceSelector must be exactly kubernetes.io/metadata.name NotIn "
                   f"{sorted(EXCLUDED_NAMESPACES)} and {want}, got {sel!r}")
        got, want = expand_manifest(w.get("rules")), expand(expected_rules)
        for t in sorted(want - got):
            self.fail(where, f"rule missing: group={t[0]!r} version={t[1]} resource={t[2]} op={t[3]} scope={t[4]}")
        for t in sorted(got - want):
            self.fail(where, f"rule not allowed: group={t[0]!r} version={t[1]} resource={t[2]} op={t[3]} scope={t[4]}")

    def cluster_role(self, name, obj, rbac):
        where = f"{name}: ClusterRole/{obj['metadata']['name']}"
        got = {}
        for r in obj.get("rules") or []:
            self.check(where, not r.get("resourceNames") and not r.get("nonResourceURLs"),
                       f"unexpected resourceNames/nonResourceURLs in {r!r}")
            for g in r.get("apiGroups") or []:
                for res in r.get("resources") or []:
                    got.setdefault((g, res), set()).update(r.get("verbs") or [])
        self.check(where, got == rbac,
                   f"rules must grant exactly {sorted((k, sorted(v)) for k, v in rbac.items())}; "
                   f"got {sorted((k, sorted(v)) for k, v in got.items())}")

    def audit_lease(self, name, by_kind):
        """The audit's Role grants exactly the Lease; its RoleBinding binds it to ocigate only."""
        roles, bindings = by_kind.get("Role", []), by_kind.get("RoleBinding", [])
        where = f"{name}: audit Lease RBAC"
        if not self.check(where, len(roles) == 1 and len(bindings) == 1,
                          f"expected one Role and one RoleBinding, got {len(roles)} and {len(bindings)}"):
            return
        self.check(where, roles[0].get("rules") == AUDIT_LEASE_RULES,
                   f"Role rules must be {AUDIT_LEASE_RULES}, got {roles[0].get('rules')}")
        self.check(where, bindings[0].get("roleRef") == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                         "name": roles[0]["metadata"]["name"]}
                   and bindings[0].get("subjects") == [{"kind": "ServiceAccount", "name": "ocigate",
                                                        "namespace": NAMESPACE}],
                   "RoleBinding must bind the Role to ServiceAccount ocigate-system/ocigate only")

    def audit_args(self, name, dep, audit):
        """--audit-interval (with POD_NAME from the downward API) exactly in the audit variant."""
        c = ((dep["spec"]["template"]["spec"].get("containers") or [{}])[0])
        args = c.get("args") or []
        where = f"{name}: Deployment/{dep['metadata']['name']}"
        self.check(where, ("--audit-interval" in args) == audit,
                   f"--audit-interval {'expected' if audit else 'not expected'} in {args}")
        if audit:
            env = {e.get("name"): e for e in c.get("env") or []}
            self.check(where, (env.get("POD_NAME") or {}).get("valueFrom") == {"fieldRef": {"fieldPath": "metadata.name"}},
                       "POD_NAME must come from metadata.name (the Lease holder's identity)")

    def client_auth_args(self, name, dep, client_auth):
        """--client-ca (a file of a mounted Secret) exactly in the client-auth variant."""
        pod = dep["spec"]["template"]["spec"]
        c = (pod.get("containers") or [{}])[0]
        args = c.get("args") or []
        where = f"{name}: Deployment/{dep['metadata']['name']}"
        if not self.check(where, ("--client-ca" in args) == client_auth,
                          f"--client-ca {'expected' if client_auth else 'not expected'} in {args}"):
            return
        if client_auth:
            ca = args[args.index("--client-ca") + 1] if args.index("--client-ca") + 1 < len(args) else ""
            mounts = {m.get("name"): m.get("mountPath", "") for m in c.get("volumeMounts") or []}
            secrets = {v.get("name") for v in pod.get("volumes") or [] if v.get("secret")}
            self.check(where, any(ca.startswith(p.rstrip("/") + "/") and n in secrets for n, p in mounts.items()),
                       f"--client-ca {ca} must be a file of a mounted Secret")

    def deployment(self, name, obj, policy_cm):
        where = f"{name}: Deployment/{obj['metadata']['name']}"
        spec = obj["spec"]
        pod = spec["template"]["spec"]
        self.check(where, spec.get("replicas") == 2, f"replicas must be 2, got {spec.get('replicas')!r}")
        self.check(where, pod.get("serviceAccountName") == "ocigate", "serviceAccountName must be ocigate")
        self.check(where, "priorityClassName" not in pod, "no priorityClassName (system-cluster-critical needs kube-system)")
        self.check(where, bool(pod.get("topologySpreadConstraints") or (pod.get("affinity") or {}).get("podAntiAffinity")),
                   "replicas must be spread across nodes (topologySpreadConstraints or podAntiAffinity)")
        psc = pod.get("securityContext") or {}
        self.check(where, psc.get("runAsNonRoot") is True, "pod securityContext.runAsNonRoot must be true")
        self.check(where, (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
                   "pod seccompProfile must be RuntimeDefault")
        self.check(where, (pod.get("terminationGracePeriodSeconds") or 30) > 10,
                   "terminationGracePeriodSeconds must exceed the server's drain grace")
        cs = pod.get("containers") or []
        if not self.check(where, len(cs) == 1, f"expected 1 container, got {len(cs)}"):
            return
        c = cs[0]
        args = c.get("args") or []
        self.check(where, args[:len(SERVE_ARGS)] == SERVE_ARGS, f"args must start with {SERVE_ARGS}, got {args}")
        self.check(where, "--registry-config" in args and
                   args[args.index("--registry-config") + 1:][:1] == ["/etc/ocigate/registry/.dockerconfigjson"],
                   "--registry-config /etc/ocigate/registry/.dockerconfigjson expected")
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
        self.check(where, ports == {"webhook": 8443, "metrics": 9090}, f"ports must be webhook:8443, metrics:9090, got {ports}")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            h = (c.get(probe) or {}).get("httpGet") or {}
            self.check(where, (h.get("path"), h.get("port"), h.get("scheme")) in ((path, "webhook", "HTTPS"), (path, 8443, "HTTPS")),
                       f"{probe} must be HTTPS GET {path} on 8443, got {h!r}")
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        self.check(where, req.get("cpu") == "50m" and req.get("memory") == "64Mi",
                   f"requests must be cpu 50m, memory 64Mi, got {req!r}")
        self.check(where, lim.get("memory") == "256Mi", f"limits.memory must be 256Mi, got {lim!r}")
        sc = c.get("securityContext") or {}
        self.check(where, sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
        self.check(where, sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
        self.check(where, sc.get("privileged") in (None, False), "privileged must not be set")
        self.check(where, (sc.get("capabilities") or {}).get("drop") == ["ALL"] and not (sc.get("capabilities") or {}).get("add"),
                   "capabilities must drop ALL and add none")
        mounts = {m["name"]: m for m in c.get("volumeMounts") or []}
        vols = {v["name"]: v for v in pod.get("volumes") or []}
        for vname, mpath in (("policy", "/etc/ocigate/policy"), ("tls", "/etc/ocigate/tls"), ("registry", "/etc/ocigate/registry")):
            m = mounts.get(vname) or {}
            self.check(where, m.get("mountPath") == mpath and m.get("readOnly") is True and "subPath" not in m,
                       f"volume {vname} must be mounted read-only at {mpath} without subPath (updates must reach the server)")
        self.check(where, (vols.get("policy") or {}).get("configMap", {}).get("name") == "ocigate-policy",
                   "volume policy must be ConfigMap ocigate-policy")
        self.check(where, "items" not in ((vols.get("policy") or {}).get("configMap") or {}),
                   "volume policy must mount every key of the ConfigMap (no items): the policy names its keys by path")
        self.check(where, (vols.get("tls") or {}).get("secret", {}).get("secretName") == TLS_SECRET,
                   f"volume tls must be Secret {TLS_SECRET}")
        reg = (vols.get("registry") or {}).get("secret", {})
        self.check(where, reg.get("secretName") == "ocigate-registry" and reg.get("optional") is True,
                   "volume registry must be the optional Secret ocigate-registry")
        if policy_cm is not None:
            text = (policy_cm.get("data") or {}).get("policy.yaml")
            try:
                pol = yaml.safe_load(text)
                self.check(where, isinstance(pol, dict) and pol.get("kind") == "Policy" and pol.get("rules"),
                           "ConfigMap ocigate-policy: policy.yaml must be a Policy with rules")
            except (yaml.YAMLError, TypeError) as e:
                self.fail(where, f"ConfigMap ocigate-policy: policy.yaml does not parse: {e}")

    def certificates(self, name, objs):
        where = f"{name}: cert-manager"
        certs = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Certificate"}
        issuers = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Issuer"}
        c = certs.get(TLS_SECRET)
        if not self.check(where, c is not None, f"Certificate {TLS_SECRET} missing"):
            return
        s = c.get("spec") or {}
        self.check(where, s.get("secretName") == TLS_SECRET, f"Certificate {TLS_SECRET}: secretName must be {TLS_SECRET}")
        self.check(where, set(s.get("dnsNames") or []) == SERVICE_DNS,
                   f"Certificate {TLS_SECRET}: dnsNames must be {sorted(SERVICE_DNS)}, got {s.get('dnsNames')}")
        # Every issuerRef must name an Issuer of this rendering, and the chain must end self-signed.
        for o in list(certs.values()):
            ref = (o.get("spec") or {}).get("issuerRef") or {}
            self.check(where, ref.get("kind", "Issuer") == "Issuer" and ref.get("name") in issuers,
                       f"Certificate {o['metadata']['name']}: issuerRef {ref!r} names no Issuer here")
        seen, cur = set(), s
        while True:
            iss = issuers.get((cur.get("issuerRef") or {}).get("name"), {}).get("spec") or {}
            if "selfSigned" in iss or not iss or id(iss) in seen:
                self.check(where, "selfSigned" in iss, "the issuer chain must end in a selfSigned Issuer")
                break
            seen.add(id(iss))
            ca = next((x.get("spec") or {} for x in certs.values()
                       if (x.get("spec") or {}).get("secretName") == (iss.get("ca") or {}).get("secretName")), None)
            if not self.check(where, ca is not None and ca.get("isCA") is True, "a CA Issuer's secret must come from an isCA Certificate"):
                break
            cur = ca
        for o in objs:
            if o["kind"] in ("Certificate", "Issuer"):
                self.check(where, o["metadata"].get("namespace") == NAMESPACE,
                           f"{o['kind']}/{o['metadata']['name']} must be in {NAMESPACE}")

    def monitoring(self, name, by_kind, dashboard_cm, svc):
        """ServiceMonitor → the Service's metrics port; alerts and dashboard read documented metrics."""
        where = f"{name}: monitoring"
        documented = documented_metrics()
        sms, rules = by_kind.get("ServiceMonitor", []), by_kind.get("PrometheusRule", [])
        if self.check(where, len(sms) == 1, f"expected one ServiceMonitor, got {len(sms)}") and svc:
            spec = sms[0].get("spec") or {}
            want = (spec.get("selector") or {}).get("matchLabels") or {}
            have = svc["metadata"].get("labels") or {}
            self.check(where, want and all(have.get(k) == v for k, v in want.items()),
                       f"ServiceMonitor selector {want} does not select Service ocigate ({have})")
            self.check(where, (spec.get("namespaceSelector") or {}).get("matchNames") == [NAMESPACE],
                       f"ServiceMonitor namespaceSelector must be matchNames [{NAMESPACE}]")
            ports = {p.get("name") for p in svc["spec"].get("ports") or []}
            eps = spec.get("endpoints") or []
            self.check(where, eps and all(e.get("port") in ports and e.get("path", "/metrics") == "/metrics"
                                          for e in eps),
                       f"ServiceMonitor endpoints must scrape /metrics on a Service port ({sorted(ports)}): {eps}")
        exprs = []
        if self.check(where, len(rules) == 1, f"expected one PrometheusRule, got {len(rules)}"):
            for g in (rules[0].get("spec") or {}).get("groups") or []:
                for r in g.get("rules") or []:
                    self.check(where, "alert" in r and "severity" in (r.get("labels") or {}),
                               f"rule {r.get('alert') or r.get('record')} must be an alert with a severity")
                    exprs.append((f"alert {r.get('alert')}", str(r.get("expr", ""))))
        if self.check(where, dashboard_cm is not None, f"ConfigMap {DASHBOARD_CM} missing"):
            labels = dashboard_cm["metadata"].get("labels") or {}
            self.check(where, labels.get("grafana_dashboard") == "1",
                       f"ConfigMap {DASHBOARD_CM} must carry the label grafana_dashboard: \"1\"")
            for key, text in (dashboard_cm.get("data") or {}).items():
                try:
                    dash = json.loads(text)
                except ValueError as e:
                    self.fail(where, f"{DASHBOARD_CM} {key}: not JSON: {e}")
                    continue
                for p in dash.get("panels") or []:
                    for t in p.get("targets") or []:
                        exprs.append((f"dashboard panel {p.get('title')!r}", t.get("expr", "")))
        for what, expr in exprs:
            for m in sorted(metrics_used(expr) - documented):
                self.fail(where, f"{what} reads {m}, which docs/metrics.md does not list")

    def custom_kinds(self, name, dep, presets):
        """The presets `serve` is given must be `presets`, without --pod-template-kind (whose
        resource this script cannot know); returns the validating rules they need."""
        if dep is None:
            return []
        args = ((dep["spec"]["template"]["spec"].get("containers") or [{}])[0]).get("args") or []
        where = f"{name}: Deployment/{dep['metadata']['name']}"
        given = sorted(v for f, v in zip(args, args[1:]) if f == "--pod-template-preset")
        self.check(where, given == presets, f"--pod-template-preset must be given {presets}, got {given}")
        self.check(where, not any(a.startswith("--pod-template-kind") for a in args),
                   "--pod-template-kind: its webhook rule cannot be checked here; use a preset or your own overlay")
        rules = preset_rules(args)
        if not self.check(where, rules is not None, "an unknown --pod-template-preset"):
            return []
        return rules

    def rendering(self, name, objs):
        variant = VARIANTS.get(name)
        if variant is None:
            self.fail(name, f"unknown kustomization; known: {sorted(VARIANTS)}")
            return
        self.objects += len(objs)
        for o in objs:
            self.schema(name, o)
        by_kind = {}
        for o in objs:
            by_kind.setdefault(o["kind"], []).append(o)

        def one(kind):
            got = by_kind.get(kind, [])
            if self.check(name, len(got) == 1, f"expected exactly one {kind}, got {len(got)}"):
                return got[0]
            return None

        for kind in ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment",
                     "PodDisruptionBudget", "Service", "ValidatingWebhookConfiguration"):
            one(kind)
        cms = {o["metadata"]["name"]: o for o in by_kind.get("ConfigMap", [])}
        self.check(name, "ocigate-policy" in cms, "ConfigMap ocigate-policy missing")
        for o in objs:
            md = o.get("metadata") or {}
            cluster_scoped = o["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding",
                                           "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
            self.check(name, cluster_scoped or md.get("namespace") == NAMESPACE,
                       f"{o['kind']}/{md.get('name')} must be in namespace {NAMESPACE}")
            self.check(name, o["kind"] != "Secret", f"no Secret may be shipped ({md.get('name')})")
            self.check(name, o["kind"] not in ("Role", "RoleBinding") or variant.get("audit"),
                       f"unexpected {o['kind']} {md.get('name')}")
        if variant.get("audit"):
            self.audit_lease(name, by_kind)
        ns = one("Namespace")
        if ns is not None:
            self.check(name, ns["metadata"]["name"] == NAMESPACE, f"Namespace must be {NAMESPACE}")
        vwc = one("ValidatingWebhookConfiguration")
        dep = one("Deployment")
        custom_rules = self.custom_kinds(name, dep, variant.get("presets", []))
        if vwc is not None:
            self.webhook_config(name, vwc, VALIDATING_RULES + custom_rules, "/validate", variant["cert_manager"],
                                variant.get("failure_policy", "Fail"), variant.get("opt_in", False))
        mwcs = by_kind.get("MutatingWebhookConfiguration", [])
        if variant["mutating"]:
            if self.check(name, len(mwcs) == 1, f"expected one MutatingWebhookConfiguration, got {len(mwcs)}"):
                self.webhook_config(name, mwcs[0], MUTATING_RULES, "/mutate", variant["cert_manager"],
                                    variant.get("failure_policy", "Fail"), variant.get("opt_in", False))
        else:
            self.check(name, not mwcs, "no MutatingWebhookConfiguration expected")
        cr = one("ClusterRole")
        if cr is not None:
            rbac = {k: set(v) for k, v in RBAC.items()}
            for k, v in (AUDIT_RBAC if variant.get("audit") else {}).items():
                rbac.setdefault(k, set()).update(v)
            self.cluster_role(name, cr, rbac)
        crb = one("ClusterRoleBinding")
        if crb is not None:
            self.check(name, crb.get("roleRef") == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                                    "name": cr["metadata"]["name"] if cr else None}
                       and crb.get("subjects") == [{"kind": "ServiceAccount", "name": "ocigate", "namespace": NAMESPACE}],
                       "ClusterRoleBinding must bind the ClusterRole to ServiceAccount ocigate-system/ocigate only")
        if dep is not None:
            self.deployment(name, dep, cms.get("ocigate-policy"))
            self.audit_args(name, dep, variant.get("audit", False))
            self.client_auth_args(name, dep, variant.get("client_auth", False))
            image = ((dep["spec"]["template"]["spec"].get("containers") or [{}])[0]).get("image", "")
            want = rf"{re.escape(IMAGE)}@sha256:[0-9a-f]{{64}}" if variant.get("pinned") else rf"{re.escape(IMAGE)}:v[0-9.]+"
            self.check(name, re.fullmatch(want, image) is not None, f"image must match {want}, got {image!r}")
            labels = dep["spec"]["selector"].get("matchLabels") or {}
            pdb = one("PodDisruptionBudget")
            if pdb is not None:
                self.check(name, pdb["spec"].get("minAvailable") == 1, "PodDisruptionBudget minAvailable must be 1")
                self.check(name, (pdb["spec"].get("selector") or {}).get("matchLabels") == labels,
                           "PodDisruptionBudget selector must match the Deployment's")
            svc = one("Service")
            if svc is not None:
                self.check(name, svc["metadata"]["name"] == "ocigate", "Service must be named ocigate")
                self.check(name, svc["spec"].get("selector") == labels, "Service selector must match the Deployment's")
                ports = {(p.get("name"), p.get("port"), p.get("targetPort")) for p in svc["spec"].get("ports") or []}
                self.check(name, ports in ({("https", 443, "webhook"), ("metrics", 9090, "metrics")},
                                           {("https", 443, 8443), ("metrics", 9090, 9090)}),
                           f"Service ports must be https 443->8443 and metrics 9090, got {sorted(ports, key=str)}")
        mon_objs = [o for o in objs if o.get("apiVersion", "").startswith("monitoring.coreos.com/")]
        if variant.get("monitoring"):
            self.monitoring(name, by_kind, cms.get(DASHBOARD_CM), one("Service"))
        else:
            self.check(name, not mon_objs and DASHBOARD_CM not in cms, "no monitoring objects expected")
        cm_objs = [o for o in objs if o.get("apiVersion", "").startswith("cert-manager.io/")]
        if variant["cert_manager"]:
            self.certificates(name, cm_objs)
        else:
            self.check(name, not cm_objs, "no cert-manager objects expected")


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    versions = [v for v in argv[1].split(",") if v]
    ck = Checker(versions)
    for arg in argv[2:]:
        name, _, path = arg.partition("=")
        with open(path) as f:
            objs = [o for o in yaml.safe_load_all(f) if o is not None]
        ck.rendering(name, objs)
    if ck.problems:
        print(f"validate-deploy: {len(ck.problems)} problem(s):", file=sys.stderr)
        for p in ck.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    skipped = ", ".join(sorted(ck.skipped_kinds)) or "none"
    print(f"validate-deploy: OK: {len(argv) - 2} kustomizations, {ck.objects} objects; "
          f"{len(ck.validated)} distinct built-in objects valid for Kubernetes {', '.join(versions)} (strict); "
          f"invariants hold; no schema for CRD kinds {skipped}: structural checks only")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
