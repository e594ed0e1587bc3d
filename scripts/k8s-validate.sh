#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/k8s offline: no cluster is needed or used.
#
#   scripts/k8s-validate.sh            # exit 0 only if every check passed
#
# What it does:
#   1. installs a pinned kubernetes-validate (PyPI) into a venv under target/k8s-validate/
#      (kept and reused while its pins are unchanged). It bundles the JSON schemas of every
#      Kubernetes version it supports, so validating needs no network; and checkov (PyPI,
#      pinned in scripts/k8s-checkov.txt) into a venv of its own beside it;
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
#      from the Secret, the route's backend exists), the image is the crate's version, and
#      the network policies deny by default and let only the app reach the store;
#   5. runs checkov's Kubernetes checks (security and least privilege: non-root, high UIDs,
#      fixed image tags, a NetworkPolicy for every pod, ...) on the same rendered documents
#      and the raw files, offline. Every check must pass or be skipped in the manifest
#      itself with an annotation `checkov.io/skipN: CKV_K8S_NN=one-line reason`; the
#      summary lists each skip with its reason (scripts/k8s_checkov_report.py).
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

# checkov and its dependencies: a list of its own (it cannot share a venv with the xtask's
# tools, see the file), installed into CHECKOV_VENV whenever the list changed.
CHECKOV_PINS="$REPO_ROOT/scripts/k8s-checkov.txt"
CHECKOV_VERSION=$(sed -n 's/^checkov==//p' "$CHECKOV_PINS")

VENV="$WORK_DIR/venv"
CHECKOV_VENV="$WORK_DIR/checkov-venv"
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

# checkov in a venv of its own (after ensure_kubernetes_validate, which makes sure python3
# can make a venv).
ensure_checkov() {
    local stamp="$CHECKOV_VENV/.elastic-cart-pins"
    if [[ -x $CHECKOV_VENV/bin/checkov && -f $stamp ]] && cmp -s "$stamp" "$CHECKOV_PINS"; then
        return 0
    fi
    rm -rf "$CHECKOV_VENV"
    python3 -m venv "$CHECKOV_VENV" || die "python3 -m venv $CHECKOV_VENV failed"
    log "installing checkov $CHECKOV_VERSION into $CHECKOV_VENV (PyPI, scripts/k8s-checkov.txt)"
    "$CHECKOV_VENV/bin/pip" install --quiet --disable-pip-version-check --no-input \
        -r "$CHECKOV_PINS" || die "pip could not install $CHECKOV_PINS (is PyPI reachable?)"
    cp "$CHECKOV_PINS" "$stamp"
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

# The checks are scripts/k8s_validate_checks.py, run in the venv's Python.
CHECKER="$REPO_ROOT/scripts/k8s_validate_checks.py"

# --- 5. checkov --------------------------------------------------------------------------------------

# Runs checkov on the rendered kustomizations and the raw *.example.yaml files; its JSON
# report goes to $WORK_DIR/checkov.json, and scripts/k8s_checkov_report.py says what it
# holds. Offline: --skip-download (no Prisma Cloud data), no update check.
run_checkov() {
    local args=() pairs=() i file
    for i in "${!RENDERED[@]}"; do
        args+=(-f "${RENDERED[$i]}")
        pairs+=("${RENDERED[$i]}" "${KUSTOMIZATIONS[$i]} (rendered)")
    done
    while IFS= read -r file; do
        args+=(-f "$file")
        pairs+=("$file" "${file#"$REPO_ROOT"/} (raw)")
    done < <(find "$K8S_DIR" -name '*.example.yaml' | sort)
    local report="$WORK_DIR/checkov.json" status=0
    log "checkov $CHECKOV_VERSION (kubernetes checks) on $((${#args[@]} / 2)) files"
    CKV_SKIP_PACKAGE_UPDATE_CHECK=true "$CHECKOV_VENV/bin/checkov" --framework kubernetes \
        --skip-download -o json "${args[@]}" >"$report" 2>"$report.err" || status=$?
    # 0: all passed; 1: a check failed (the report says which); anything else: it crashed.
    if ((status > 1)) || ! "$CHECKOV_VENV/bin/python" -c 'import json,sys; json.load(open(sys.argv[1]))' "$report" 2>/dev/null; then
        cat "$report.err" >&2
        die "checkov exited $status without a JSON report"
    fi
    "$CHECKOV_VENV/bin/python" "$REPO_ROOT/scripts/k8s_checkov_report.py" "$report" "${pairs[@]}" &&
        ((status == 0))
}

main() {
    [[ -d $K8S_DIR ]] || die "no $K8S_DIR"
    ensure_kubernetes_validate
    ensure_checkov
    ensure_kubectl
    local kubectl_version kustomize_version
    kubectl_version=$("$KUBECTL" version --client -o json |
        "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')
    kustomize_version=$("$KUBECTL" version --client -o json |
        "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin).get("kustomizeVersion","?"))')
    render_all
    local pairs=() i
    for i in "${!RENDERED[@]}"; do
        pairs+=("${RENDERED[$i]}" "${KUSTOMIZATIONS[$i]}")
    done
    log "validating (Kubernetes ${K8S_SCHEMA_VERSIONS[*]}, strict)"
    local status=0
    "$VENV/bin/python" "$CHECKER" "$REPO_ROOT" "$K8S_DIR" \
        "${K8S_SCHEMA_VERSIONS[*]}" "${pairs[@]}" || status=$?
    run_checkov || status=1
    echo "kubernetes-validate $KUBERNETES_VALIDATE_VERSION (PyPI, strict), schemas of Kubernetes ${K8S_SCHEMA_VERSIONS[*]}"
    echo "kubectl $kubectl_version / kustomize $kustomize_version (Debian $KUBECTL_SUITE kubectl $(cat "$BIN_DIR/kubectl.deb-version"))"
    if ((status)); then
        echo "k8s-validate: FAILED after $((SECONDS - started_at)) s"
        exit 1
    fi
    echo "k8s-validate: OK (${#KUSTOMIZATIONS[@]} kustomizations: ${KUSTOMIZATIONS[*]}) in $((SECONDS - started_at)) s"
}

main "$@"
