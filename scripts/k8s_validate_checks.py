#!/usr/bin/env python3
"""The checks of scripts/k8s-validate.sh over the rendered manifests, run in its venv's
Python (kubernetes-validate's own library call, strict mode, the one its --strict command
line makes; PyYAML and jsonschema come with it). Arguments as the script passes them."""
import os, re, sys

import jsonschema
import yaml
import kubernetes_validate.utils as kv

repo, k8s_dir = sys.argv[1], sys.argv[2]
versions = sys.argv[3].split()
# Then pairs: a rendered file, the kustomization directory it came from.
rendered = dict(zip(sys.argv[4::2], sys.argv[5::2]))
errors, notes = [], []
GATEWAY_GROUP = "gateway.networking.k8s.io/"
APP = "elastic-cart"
# The image tag the base names: the crate's version, so a release bump that forgets the
# manifests fails here.
with open(os.path.join(repo, "Cargo.toml")) as f:
    CRATE_VERSION = re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)


def rel(path):
    return os.path.relpath(path, repo)


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def name_of(doc):
    return "%s/%s" % (doc.get("kind"), (doc.get("metadata") or {}).get("name"))


# -- every manifest file is reached: included by a kustomization, or validated raw ----------
def kustomization_files():
    seen, components, used_components = set(), set(), set()
    for root, _, files in os.walk(k8s_dir):
        if "kustomization.yaml" not in files:
            continue
        k = load(os.path.join(root, "kustomization.yaml"))[0]
        if k.get("kind") == "Component":
            components.add(os.path.normpath(root))
        entries = list(k.get("resources", []))
        entries += [p["path"] for p in k.get("patches", []) if "path" in p]
        for entry in entries:
            path = os.path.normpath(os.path.join(root, entry))
            if os.path.isfile(path):
                seen.add(path)
        for entry in k.get("components", []):
            used_components.add(os.path.normpath(os.path.join(root, entry)))
    return seen, components, used_components


included, components, used_components = kustomization_files()
raw_files = []
for root, _, files in os.walk(k8s_dir):
    for f in sorted(files):
        path = os.path.normpath(os.path.join(root, f))
        if not f.endswith((".yaml", ".yml")) or f == "kustomization.yaml":
            continue
        if f.endswith(".example.yaml"):
            raw_files.append(path)
        elif path not in included:
            errors.append("%s: in no kustomization and not *.example.yaml, so nothing "
                          "would validate it" % rel(path))
for c in sorted(components - used_components):
    errors.append("%s: a Component that no kustomization uses, so it is never rendered "
                  "or validated" % rel(c))


# -- Gateway API documents ---------------------------------------------------------------------
def strict(schema):
    """The CRD schema with unknown fields rejected (as the API server's strict field
    validation does), wherever the schema lists properties and does not keep unknown ones."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


crd_schemas, crd_source = {}, None
crd_file = os.environ.get("GATEWAY_API_CRDS")
if crd_file:
    for crd in load(crd_file):
        spec = crd.get("spec") or {}
        if crd.get("kind") != "CustomResourceDefinition" or \
                spec.get("group") != "gateway.networking.k8s.io":
            continue
        for v in spec.get("versions", []):
            key = ("gateway.networking.k8s.io/" + v["name"], spec["names"]["kind"])
            crd_schemas[key] = strict(v["schema"]["openAPIV3Schema"])
    bundle = ((load(crd_file)[0].get("metadata") or {}).get("annotations") or {}).get(
        "gateway.networking.k8s.io/bundle-version", "unknown version")
    crd_source = "%s (Gateway API %s)" % (crd_file, bundle)
    if not crd_schemas:
        errors.append("GATEWAY_API_CRDS=%s holds no Gateway API CRD" % crd_file)

# HTTPRoute v1 fields of the standard channel (what a standard-channel cluster accepts).
ROUTE_SPEC_FIELDS = {"parentRefs", "hostnames", "rules"}
ROUTE_RULE_FIELDS = {"name", "matches", "filters", "backendRefs", "timeouts"}
PARENT_REF_FIELDS = {"group", "kind", "namespace", "name", "sectionName", "port"}
BACKEND_REF_FIELDS = {"group", "kind", "namespace", "name", "port", "weight", "filters"}
gateway_checks = {"schema": 0, "structural": 0}


def check_gateway(doc, where):
    api, kind = doc.get("apiVersion"), doc.get("kind")
    label = "%s %s" % (where, name_of(doc))
    if (api, kind) in crd_schemas:
        gateway_checks["schema"] += 1
        validator = jsonschema.Draft7Validator(crd_schemas[(api, kind)])
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
            errors.append("%s: %s: %s (Gateway API CRD schema)" %
                          (label, ".".join(map(str, e.path)) or "(top level)", e.message))
        return
    if crd_file:
        errors.append("%s: %s %s is not in GATEWAY_API_CRDS" % (label, api, kind))
        return
    if (api, kind) != ("gateway.networking.k8s.io/v1", "HTTPRoute"):
        errors.append("%s: %s %s: no schema and no structural check for it" %
                      (label, api, kind))
        return
    gateway_checks["structural"] += 1
    spec = doc.get("spec") or {}

    def unknown(obj, allowed, path):
        for k in sorted(set(obj) - allowed):
            errors.append("%s: %s.%s: not a standard-channel HTTPRoute v1 field" %
                          (label, path, k))

    unknown(doc, {"apiVersion", "kind", "metadata", "spec"}, "")
    unknown(spec, ROUTE_SPEC_FIELDS, "spec")
    if not spec.get("parentRefs"):
        errors.append("%s: spec.parentRefs is empty: the route attaches to no Gateway" % label)
    for i, ref in enumerate(spec.get("parentRefs") or []):
        unknown(ref, PARENT_REF_FIELDS, "spec.parentRefs[%d]" % i)
        if not ref.get("name"):
            errors.append("%s: spec.parentRefs[%d] has no name" % (label, i))
    for i, rule in enumerate(spec.get("rules") or []):
        unknown(rule, ROUTE_RULE_FIELDS, "spec.rules[%d]" % i)
        for j, ref in enumerate(rule.get("backendRefs") or []):
            unknown(ref, BACKEND_REF_FIELDS, "spec.rules[%d].backendRefs[%d]" % (i, j))


# -- invariants of the design, on each rendered kustomization -----------------------------------------
def check_design(docs, where):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    for d in docs:
        meta = d.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get("app.kubernetes.io/name") != APP and \
                labels.get("app.kubernetes.io/part-of") != APP:
            errors.append("%s %s: labelled neither app.kubernetes.io/name nor part-of %s"
                          % (where, name_of(d), APP))
        if d.get("kind") != "Namespace" and meta.get("namespace") != APP:
            errors.append("%s %s: namespace %r, not %s" %
                          (where, name_of(d), meta.get("namespace"), APP))
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    secrets = [s["metadata"]["name"] for s in by_kind.get("Secret", [])]
    if APP not in services:
        errors.append("%s: no Service %s" % (where, APP))
    elif services[APP]["spec"].get("sessionAffinity") != "None":
        errors.append("%s %s: sessionAffinity must be None" % (where, name_of(services[APP])))
    apps = [d for d in by_kind.get("Deployment", []) if d["metadata"]["name"] == APP]
    if len(apps) != 1:
        errors.append("%s: expected one Deployment %s, found %d" % (where, APP, len(apps)))
    for dep in apps:
        spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
        ru = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        if ru.get("maxUnavailable") != 0:
            errors.append("%s %s: rollingUpdate.maxUnavailable must be 0" %
                          (where, name_of(dep)))
        if "replicas" in spec:
            errors.append("%s %s: sets replicas, which fights the HPA" % (where, name_of(dep)))
        app = [c for c in pod["containers"] if c["name"] == "app"]
        if not app:
            errors.append("%s %s: no container named app" % (where, name_of(dep)))
            continue
        # Unless an overlay's `images:` renamed it, the image is the crate's version.
        image = app[0].get("image", "")
        if image.split("@")[0].rsplit(":", 1)[0] == APP and image != "%s:%s" % (APP, CRATE_VERSION):
            errors.append("%s %s: image %s, not %s:%s (Cargo.toml's version)" %
                          (where, name_of(dep), image, APP, CRATE_VERSION))
        env = {e["name"]: e for e in app[0].get("env", [])}
        ref = ((env.get("REDIS_URL") or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        wanted = secrets[0] if len(secrets) == 1 else "elastic-cart-redis"
        if ref.get("key") != "url" or ref.get("name") != wanted:
            errors.append("%s %s: REDIS_URL must come from Secret %s key url, not %r" %
                          (where, name_of(dep), wanted, ref))
        drain_s = int((env.get("SHUTDOWN_DRAIN_MS") or {}).get("value", "2000")) / 1000
        pre_stop = ((app[0].get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
        grace = pod.get("terminationGracePeriodSeconds", 30)
        # The replica exits at most 10 s after SIGTERM, its drain included (SHUTDOWN_LIMIT
        # in src/startup.rs): what is in flight when the listener closes gets the rest.
        stop_limit = 10
        if not pre_stop.get("seconds"):
            errors.append("%s %s: no preStop sleep before the drain" % (where, name_of(dep)))
        elif drain_s >= stop_limit:
            errors.append("%s %s: a drain of %gs leaves nothing of the replica's %gs stop" %
                          (where, name_of(dep), drain_s, stop_limit))
        elif pre_stop["seconds"] + stop_limit >= grace:
            errors.append("%s %s: preStop %gs + the replica's stop (up to %gs) does not fit in "
                          "terminationGracePeriodSeconds %s" %
                          (where, name_of(dep), pre_stop["seconds"], stop_limit, grace))
    check_network_policies(docs, by_kind, where)
    for route in by_kind.get("HTTPRoute", []):
        for rule in route["spec"].get("rules") or []:
            if "sessionPersistence" in rule:
                errors.append("%s %s: sessionPersistence is session affinity; the design "
                              "has none" % (where, name_of(route)))
            for ref in rule.get("backendRefs") or []:
                svc = services.get(ref.get("name"))
                if ref.get("kind", "Service") != "Service" or svc is None:
                    errors.append("%s %s: backendRef %s is no Service of this render" %
                                  (where, name_of(route), ref.get("name")))
                elif ref.get("port") not in [p["port"] for p in svc["spec"]["ports"]]:
                    errors.append("%s %s: backendRef port %s is not a port of Service %s" %
                                  (where, name_of(route), ref.get("port"), ref.get("name")))


def selects(selector, labels):
    """True if a label selector (matchLabels only, as the manifests write them) selects
    an object with these labels; an empty selector selects everything."""
    if set(selector or {}) - {"matchLabels"}:
        return False
    return all(labels.get(k) == v for k, v in ((selector or {}).get("matchLabels") or {}).items())


def allowed(policies, labels, direction, peer_ok, port, protocol="TCP"):
    """True if a policy selecting pods with `labels` has a `direction` rule ("ingress" or
    "egress") open to `port` (a number, or a set of a number and a name) for a peer that
    peer_ok accepts (None stands for "any peer": a rule without from/to)."""
    ports = port if isinstance(port, set) else {port}
    peers_key = "from" if direction == "ingress" else "to"
    for p in policies:
        if not selects(p["spec"].get("podSelector"), labels):
            continue
        for rule in p["spec"].get(direction) or []:
            port_ok = not rule.get("ports") or any(
                r.get("port") in ports and r.get("protocol", "TCP") == protocol
                for r in rule["ports"])
            if port_ok and any(peer_ok(peer) for peer in rule.get(peers_key) or [None]):
                return True
    return False


def check_network_policies(docs, by_kind, where):
    """Deny by default; the app's pods may reach DNS and the store, and the store's pods
    take connections from the app's pods only (on their port: checked because no cluster
    applies these manifests here, so a policy that cut the app off would go unnoticed)."""
    policies = by_kind.get("NetworkPolicy", [])
    deny = [p for p in policies if p["spec"].get("podSelector") == {}
            and set(p["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    if not deny:
        errors.append("%s: no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, "
                      "no rules)" % where)
    workloads = [(d, d["spec"]["template"]["metadata"].get("labels") or {},
                  d["spec"]["template"]["spec"]["containers"][0].get("ports") or [])
                 for d in docs if d.get("kind") in ("Deployment", "StatefulSet")]
    app = [(d, labels) for d, labels, _ in workloads if d["metadata"]["name"] == APP]
    if not app:
        return
    app_dep, app_labels = app[0]

    def is_app(peer):
        return peer is not None and set(peer) == {"podSelector"} and \
            selects(peer["podSelector"], app_labels)

    if not allowed(policies, app_labels, "egress", lambda peer: True, 53, "UDP"):
        errors.append("%s %s: no NetworkPolicy lets it reach DNS (port 53 UDP)" %
                      (where, name_of(app_dep)))
    if not allowed(policies, app_labels, "egress", lambda peer: True, 6379):
        errors.append("%s %s: no NetworkPolicy lets it reach Redis (port 6379)" %
                      (where, name_of(app_dep)))
    if not allowed(policies, app_labels, "ingress", lambda peer: peer is not None, "http"):
        errors.append("%s %s: no NetworkPolicy lets the gateway reach its port http" %
                      (where, name_of(app_dep)))
    for d, labels, ports in workloads:
        if d is app_dep:
            continue
        # Any other workload (the try-it Redis): the app reaches its ports, nobody else does.
        for port in ports:
            wanted = {port["containerPort"]} | ({port["name"]} if "name" in port else set())
            if not allowed(policies, labels, "ingress", is_app, wanted):
                errors.append("%s %s: no NetworkPolicy lets the app's pods reach its port %s" %
                              (where, name_of(d), port.get("name", port["containerPort"])))
        for p in policies:
            if not selects(p["spec"].get("podSelector"), labels):
                continue
            for rule in p["spec"].get("ingress") or []:
                for peer in rule.get("from") or [None]:
                    if not is_app(peer):
                        errors.append("%s %s: lets %s reach %s; only the app's pods may" %
                                      (where, name_of(p), peer or "everyone", name_of(d)))


# -- run ------------------------------------------------------------------------------------------------
sources = [(f, rendered[f], True) for f in rendered] + \
          [(f, rel(f), False) for f in raw_files]
documents = 0
summary = []
for path, label, is_render in sources:
    docs = load(path)
    documents += len(docs)
    kinds = {}
    for doc in docs:
        kinds[doc.get("kind")] = kinds.get(doc.get("kind"), 0) + 1
        if str(doc.get("apiVersion", "")).startswith(GATEWAY_GROUP):
            check_gateway(doc, label)
            continue
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                errors.append("%s %s: %s: %s (Kubernetes %s, strict)" % (
                    label, name_of(doc), ".".join(map(str, e.path)) or "(top level)",
                    e.message, version))
            except kv.SchemaNotFoundError as e:
                errors.append("%s %s: %s" % (label, name_of(doc), e.message))
            except kv.VersionNotSupportedError as e:
                errors.append("kubernetes-validate does not support Kubernetes %s" % version)
    if is_render:
        check_design(docs, label)
    summary.append("  %-46s %2d: %s" % (
        label + (" (rendered)" if is_render else " (raw)"), len(docs),
        ", ".join("%s %s" % (n, k) for k, n in sorted(kinds.items()))))

print("\n".join(summary))
print("documents: %d in %d rendered kustomizations and %d raw files" %
      (documents, len(rendered), len(raw_files)))
if crd_source:
    print("Gateway API: %d documents validated against the CRD schema of %s "
          "(strict fields; its CEL rules not evaluated)" % (gateway_checks["schema"], crd_source))
else:
    print("Gateway API: %d documents checked STRUCTURALLY only (kubernetes-validate has no "
          "CRD schemas; set GATEWAY_API_CRDS to a Gateway API CRD file for a schema check)"
          % gateway_checks["structural"])
if errors:
    print("\n%d ERRORS:" % len(errors))
    for e in errors:
        print("  " + e)
    sys.exit(1)
