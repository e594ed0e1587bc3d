#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/k8s offline: no cluster is needed or used.
#
#   scripts/k8s-validate.sh            # exit 0 only if every check passed
#
# What it does:
#   1. installs a pinned kubernetes-validate (PyPI) into a venv under target/k8s-validate/
#      (kept and reused while its pins are unchanged). It bundles the JSON schemas of every
#      Kubernetes version it supports, so validating needs no network;
#   2. gets kubectl (for `kubectl kustomize`) from Debian trixie's `kubectl` package. The
#      binary is taken out of the .deb into target/k8s-validate/bin, through an apt
#      configuration of its own under target/: nothing is installed on the host, no apt
#      source is added to it and no host package is upgraded. Why not bookworm's
#      kubernetes-client: it is kubectl 1.20, whose kustomize (v2) knows no `labels` and no
#      components. Why not `apt-get install -t trixie kubectl`: it works on a bare bookworm
#      (kubectl needs only libc6 >= 2.34), but would replace any kubectl already installed
#      (e.g. Google Cloud's, which then also blocks it);
#   3. renders every kustomization under deploy/k8s (`kubectl kustomize DIR`) and validates
#      each rendered document, plus the files that no kustomization includes
#      (*.example.yaml), with kubernetes-validate's strict schemas (unknown fields are
#      errors) for each Kubernetes version in K8S_SCHEMA_VERSIONS;
#   4. checks what no schema can: every manifest file is reached by some check, every
#      object carries the app's labels and namespace, and the drain rules hold (preStop +
#      the replica's stop < grace period, maxUnavailable 0, no session affinity, REDIS_URL
#      from the Secret, the route's backend exists).
#
# Gateway API (the HTTPRoute in components/gateway-route): kubernetes-validate has schemas
# for built-in kinds only, and the Gateway API's CRDs are on no registry CI can reach. So
# its documents are checked apart, and the summary says how:
#   - GATEWAY_API_CRDS=/path/to/standard-install.yaml (a Gateway API release's CRDs, or just
#     its httproutes CRD): against that CRD's openAPIV3Schema, unknown fields rejected as
#     the API server's strict field validation does (its CEL rules are not evaluated);
#   - otherwise: a structural check of the fields this repository relies on (standard
#     channel field names, parentRefs, backendRefs to a rendered Service and port, no
#     sessionPersistence). It is not a schema validation, and the output says so.
#
# Needs: python3 with venv (Debian: python3 python3-venv), apt-get and dpkg-deb (always on
# Debian), and PyPI plus a Debian mirror the first time. Missing Debian packages are
# installed when run as root (only if apt would upgrade nothing), else named; nothing is
# ever skipped.
#
# Environment:
#   GATEWAY_API_CRDS          Gateway API CRD file for a schema check of the HTTPRoute
#   K8S_VALIDATE_DIR          work directory (default target/k8s-validate)
#   K8S_VALIDATE_DEBIAN_MIRROR  Debian mirror (default: the host's apt source, else
#                             http://deb.debian.org/debian)
#   K8S_VALIDATE_NO_INSTALL=1 never apt-get install; name the missing package and stop
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
K8S_DIR="$REPO_ROOT/deploy/k8s"
WORK_DIR="${K8S_VALIDATE_DIR:-$REPO_ROOT/target/k8s-validate}"

# --- Pins ------------------------------------------------------------------------------------
# kubernetes-validate and every package it pulls in, so that a run next year resolves the
# same code (bump together; `pip list` in the venv shows the set).
KUBERNETES_VALIDATE_VERSION=1.37.0
PYTHON_PINS=(
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    "attrs==26.1.0"
    "importlib_resources==7.1.0"
    "jsonschema==4.26.0"
    "jsonschema-specifications==2025.9.1"
    "packaging==26.4"
    "PyYAML==6.0.4"
    "referencing==0.37.0"
    "rpds-py==2026.9.1"
    "typing_extensions==4.16.0"
)
# The Kubernetes versions whose schemas every document must pass: 1.30, the oldest these
# manifests support (the preStop `sleep` action is on by default from 1.30), and 1.37, the
# newest the pinned kubernetes-validate bundles (catches removed or renamed fields).
K8S_SCHEMA_VERSIONS=(1.30.0 1.37.0)
# kubectl from Debian trixie (a stable release, so this version stays available there):
# kubectl 1.32.3 with kustomize v5.5.0. If a point release replaces it, the script takes
# trixie's newer 1.32.x build and says so; another minor version is refused (bump here).
KUBECTL_SUITE=trixie
KUBECTL_DEB_VERSION="1.32.3+ds-2"
KUBECTL_UPSTREAM_SERIES="1.32."

VENV="$WORK_DIR/venv"
BIN_DIR="$WORK_DIR/bin"
KUBECTL="$BIN_DIR/kubectl"
APT_DIR="$WORK_DIR/apt"
RENDER_DIR="$WORK_DIR/rendered"

started_at=$SECONDS

log() { printf '[k8s-validate] %s\n' "$*" >&2; }
die() {
    printf '[k8s-validate] ERROR: %s\n' "$*" >&2
    exit 1
}

# --- Debian packages for the tools -------------------------------------------------------------

# Installs Debian packages from the host's own suites, but only as root, only if allowed,
# and only if apt would install new packages without upgrading any installed one; otherwise
# stops with the command to run.
apt_install_new_only() {
    local why=$1
    shift
    local hint="apt-get install $*"
    if [[ ${K8S_VALIDATE_NO_INSTALL:-0} == 1 || $(id -u) -ne 0 ]] ||
        ! command -v apt-get >/dev/null; then
        die "$why: install the Debian package(s) $* ($hint)"
    fi
    local plan
    plan=$(apt-get install -s --no-install-recommends "$@" 2>/dev/null | grep '^Inst ' || true)
    if [[ -z $plan ]]; then
        log "apt-get update (to find $*)"
        apt-get update -qq
        plan=$(apt-get install -s --no-install-recommends "$@" 2>/dev/null | grep '^Inst ' ||
            true)
    fi
    [[ -n $plan ]] || die "$why: apt cannot install $* here ($hint)"
    # "Inst name [installed-version] (...)" is an upgrade of an installed package.
    if grep -q '^Inst [^ ]* \[' <<<"$plan"; then
        die "$why: installing $* would upgrade installed packages; run '$hint' yourself if that is fine"
    fi
    log "$why: apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- 1. kubernetes-validate in a venv --------------------------------------------------------------

ensure_kubernetes_validate() {
    local stamp="$VENV/.elastic-cart-pins" want
    want=$(printf '%s\n' "${PYTHON_PINS[@]}")
    if [[ -x $VENV/bin/kubernetes-validate && -f $stamp && $(cat "$stamp") == "$want" ]] &&
        [[ $("$VENV/bin/kubernetes-validate" --version 2>/dev/null) == "$KUBERNETES_VALIDATE_VERSION" ]]; then
        return 0
    fi
    command -v python3 >/dev/null || apt_install_new_only "python3 is missing" python3 python3-venv
    rm -rf "$VENV"
    mkdir -p "$WORK_DIR"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        apt_install_new_only "python3 cannot create a venv" python3-venv
        python3 -m venv "$VENV" || die "python3 -m venv still fails"
    fi
    log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV (PyPI)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input "${PYTHON_PINS[@]}" ||
        die "pip could not install ${PYTHON_PINS[*]} (is PyPI reachable?)"
    [[ $("$VENV/bin/kubernetes-validate" --version) == "$KUBERNETES_VALIDATE_VERSION" ]] ||
        die "the venv's kubernetes-validate is not $KUBERNETES_VALIDATE_VERSION"
    printf '%s\n' "$want" >"$stamp"
}

# --- 2. kubectl out of Debian's .deb -------------------------------------------------------------

# The first plain http(s) Debian mirror of the host's apt sources (not the security one).
debian_mirror() {
    if [[ -n ${K8S_VALIDATE_DEBIAN_MIRROR:-} ]]; then
        printf '%s\n' "$K8S_VALIDATE_DEBIAN_MIRROR"
        return
    fi
    local files=() file mirror=""
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list.d/*.sources; do
        [[ -f $file ]] && files+=("$file")
    done
    if ((${#files[@]})); then
        mirror=$(grep -hE '^(URIs:|deb )' "${files[@]}" | grep -oE 'https?://[^ ]+' |
            grep -E '/debian/?$' | grep -v -- '-security' | head -n 1 || true)
    fi
    printf '%s\n' "${mirror:-http://deb.debian.org/debian}"
}

ensure_kubectl() {
    local stamp="$BIN_DIR/kubectl.deb-version"
    if [[ -x $KUBECTL && -f $stamp ]] && "$KUBECTL" version --client >/dev/null 2>&1; then
        local have
        have=$(cat "$stamp")
        if [[ $have == "$KUBECTL_DEB_VERSION" || $have == "$KUBECTL_UPSTREAM_SERIES"* ]]; then
            return 0
        fi
    fi
    command -v apt-get >/dev/null || die "apt-get is missing (Debian package apt)"
    command -v dpkg-deb >/dev/null || die "dpkg-deb is missing (Debian package dpkg)"
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [[ -f $keyring ]] ||
        apt_install_new_only "Debian's archive keys are missing" debian-archive-keyring
    local mirror
    mirror=$(debian_mirror)
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/deb"
    printf 'deb [signed-by=%s] %s %s main\n' "$keyring" "$mirror" "$KUBECTL_SUITE" \
        >"$APT_DIR/sources.list"
    # Only this sources.list, these lists and this cache: the host's apt state is read
    # (dpkg status) but never written.
    local apt_opts=(
        -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::Etc::Preferences=/dev/null"
        -o "Dir::Etc::PreferencesParts=/dev/null"
        -o "Dir::State::Lists=$APT_DIR/lists"
        -o "Dir::Cache=$APT_DIR/cache"
        -o "APT::Sandbox::User=$(id -un)"
    )
    log "reading Debian $KUBECTL_SUITE's package list from $mirror (into $APT_DIR)"
    apt-get "${apt_opts[@]}" update -qq ||
        die "apt-get update of Debian $KUBECTL_SUITE failed (mirror $mirror; a NO_PUBKEY error means debian-archive-keyring is too old)"
    local version=$KUBECTL_DEB_VERSION available
    available=$(apt-cache "${apt_opts[@]}" madison kubectl | awk -F' *[|] *' '{print $2}')
    if ! grep -qxF "$KUBECTL_DEB_VERSION" <<<"$available"; then
        version=$(grep -m1 "^$KUBECTL_UPSTREAM_SERIES" <<<"$available" || true)
        [[ -n $version ]] ||
            die "Debian $KUBECTL_SUITE has no kubectl $KUBECTL_DEB_VERSION nor any ${KUBECTL_UPSTREAM_SERIES}x (it has: $(tr '\n' ' ' <<<"$available")); update KUBECTL_DEB_VERSION in $0"
        log "WARNING: kubectl $KUBECTL_DEB_VERSION is gone from $KUBECTL_SUITE; using its $version (same minor version)"
    fi
    log "downloading kubectl $version from Debian $KUBECTL_SUITE"
    rm -f "$APT_DIR"/deb/*.deb
    (cd "$APT_DIR/deb" && apt-get "${apt_opts[@]}" download -qq "kubectl=$version") ||
        die "apt-get download kubectl=$version failed"
    local tmp
    tmp=$(mktemp -d)
    dpkg-deb --fsys-tarfile "$APT_DIR"/deb/kubectl_*.deb | tar -x -C "$tmp" ./usr/bin/kubectl
    mkdir -p "$BIN_DIR"
    install -m 0755 "$tmp/usr/bin/kubectl" "$KUBECTL"
    rm -rf "$tmp" "$APT_DIR"/deb/*.deb
    printf '%s\n' "$version" >"$stamp"
    "$KUBECTL" version --client >/dev/null 2>&1 || die "the extracted kubectl does not run"
}

# --- 3. render ---------------------------------------------------------------------------------------

# Fills KUSTOMIZATIONS (directories of kind Kustomization, relative to the repository) and
# renders each into $RENDER_DIR; components are rendered through the overlays that use them
# (the checks below fail for a component that no kustomization uses).
KUSTOMIZATIONS=()
RENDERED=()
render_all() {
    rm -rf "$RENDER_DIR"
    mkdir -p "$RENDER_DIR"
    local file dir rel out
    while IFS= read -r file; do
        grep -qE '^kind: *Component *$' "$file" && continue
        dir=$(dirname "$file")
        rel=${dir#"$REPO_ROOT"/}
        KUSTOMIZATIONS+=("$rel")
        out="$RENDER_DIR/$(tr '/' '_' <<<"$rel").yaml"
        "$KUBECTL" kustomize "$dir" >"$out" 2>"$out.err" || {
            cat "$out.err" >&2
            die "kubectl kustomize $rel failed"
        }
        RENDERED+=("$out")
    done < <(find "$K8S_DIR" -name kustomization.yaml | sort)
    ((${#KUSTOMIZATIONS[@]})) || die "no kustomization.yaml under $K8S_DIR"
}

# --- 4. validate -------------------------------------------------------------------------------------

# The checks, in the venv's Python (kubernetes-validate's own library call, strict mode, the
# one its --strict command line makes; PyYAML and jsonschema come with it).
write_checker() {
    cat >"$WORK_DIR/check.py" <<'PYTHON'
import os, sys

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
PYTHON
}

main() {
    [[ -d $K8S_DIR ]] || die "no $K8S_DIR"
    ensure_kubernetes_validate
    ensure_kubectl
    local kubectl_version kustomize_version
    kubectl_version=$("$KUBECTL" version --client -o json |
        "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')
    kustomize_version=$("$KUBECTL" version --client -o json |
        "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin).get("kustomizeVersion","?"))')
    render_all
    write_checker
    local pairs=() i
    for i in "${!RENDERED[@]}"; do
        pairs+=("${RENDERED[$i]}" "${KUSTOMIZATIONS[$i]}")
    done
    log "validating (Kubernetes ${K8S_SCHEMA_VERSIONS[*]}, strict)"
    local status=0
    "$VENV/bin/python" "$WORK_DIR/check.py" "$REPO_ROOT" "$K8S_DIR" \
        "${K8S_SCHEMA_VERSIONS[*]}" "${pairs[@]}" || status=$?
    echo "kubernetes-validate $KUBERNETES_VALIDATE_VERSION (PyPI, strict), schemas of Kubernetes ${K8S_SCHEMA_VERSIONS[*]}"
    echo "kubectl $kubectl_version / kustomize $kustomize_version (Debian $KUBECTL_SUITE kubectl $(cat "$BIN_DIR/kubectl.deb-version"))"
    if ((status)); then
        echo "k8s-validate: FAILED after $((SECONDS - started_at)) s"
        exit 1
    fi
    echo "k8s-validate: OK (${#KUSTOMIZATIONS[@]} kustomizations: ${KUSTOMIZATIONS[*]}) in $((SECONDS - started_at)) s"
}

main "$@"
