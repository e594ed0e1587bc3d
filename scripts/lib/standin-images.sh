# shellcheck shell=bash
# Shared by scripts/compose-e2e.sh and scripts/demo.sh (source it; do not run it).
#
# It gets the machine ready to run docker-compose.yml with Compose v2:
#
#   ensure_compose_v2      makes `docker compose` work (Debian unstable's plugin if needed)
#   prepare_images         chooses the images: the official ones where a registry is reachable,
#                          else local stand-ins built from Debian packages (see below)
#   compose ...            runs `docker compose` on this repository's compose file with the
#                          chosen images (it passes --pull never / --build for you on `up`)
#
# Why stand-ins: some machines (CI here among them) reach Debian's package mirrors but no
# container registry, so redis, nginx, prometheus and rust images cannot be pulled. The stand-ins are
# made from a debootstrapped Debian unstable tree, which has what the stack needs:
#   - nginx >= 1.27.3, because nginx.conf uses `server app:3000 resolve` (unstable has 1.30);
#   - redis-server and redis-cli (compose's health check runs `redis-cli ping`);
#   - prometheus and promtool, for the compose file's `observability` profile;
#   - a runtime for the host-built, glibc-linked target/release/elastic-cart (built on
#     bookworm; unstable's newer glibc runs it), laid out like the Dockerfile's runtime stage.
# The debootstrapped trees are cached under target/standin/, and the images are kept by
# Docker, so only the first run pays for them (about a minute); later runs rebuild only the
# app image, from the current binary.
#
# Settings (environment):
#   ELASTIC_CART_IMAGES   auto (default) | standin | official
#                         auto: the official images if they are present locally or can be
#                         pulled, else stand-ins. `standin` never contacts a registry.
#   STANDIN_DIR           cache of the debootstrapped trees (default: target/standin)
#   DEBIAN_MIRROR         default: the first Debian archive URI of this machine's apt sources
#   ELASTIC_CART_BIN      the binary to put in the app stand-in (default: build it with
#                         `cargo build --release --locked` and use target/release/elastic-cart)
#   SKIP_CARGO_BUILD=1    use the existing target/release/elastic-cart without building

# Repository root, whichever script sourced us.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STANDIN_DIR="${STANDIN_DIR:-$REPO_ROOT/target/standin}"
# The mirror this machine's apt already uses for the main archive (not -security).
debian_mirror_from_apt() {
    local files=() file
    for file in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
        [[ -f $file ]] && files+=("$file")
    done
    ((${#files[@]})) || return 0
    grep -hE '^(URIs:|deb )' "${files[@]}" | grep -oE 'https?://[^ ]+' |
        grep -v -- '-security' | head -n 1 || true
}
DEBIAN_MIRROR="${DEBIAN_MIRROR:-$(debian_mirror_from_apt)}"
ELASTIC_CART_IMAGES="${ELASTIC_CART_IMAGES:-auto}"

# The suite the stand-ins come from: the first with nginx >= 1.27.3.
STANDIN_SUITE=unstable
# Stand-in image names. The base/redis/nginx tags carry a version: bump it when their recipe
# changes so that existing machines rebuild them.
STANDIN_RECIPE=1
STANDIN_BASE_IMAGE="elastic-cart-standin-base:r$STANDIN_RECIPE"
STANDIN_REDIS_IMAGE="elastic-cart-standin-redis:r$STANDIN_RECIPE"
STANDIN_NGINX_IMAGE="elastic-cart-standin-nginx:r$STANDIN_RECIPE"
STANDIN_PROMETHEUS_IMAGE="elastic-cart-standin-prometheus:r$STANDIN_RECIPE"
STANDIN_APP_IMAGE="elastic-cart-standin-app:latest"

# The images docker-compose.yml uses by default (keep in step with it).
OFFICIAL_REDIS_IMAGE="redis:7.4-alpine"
OFFICIAL_NGINX_IMAGE="nginx:1.27.3"
OFFICIAL_PROMETHEUS_IMAGE="prom/prometheus:v3.5.0"
OFFICIAL_RUST_IMAGE="rust:1-bookworm"
OFFICIAL_RUNTIME_IMAGE="debian:bookworm-slim"

# Where the Compose v2 plugin goes when we install it by hand. The docker CLI looks here,
# and dpkg owns nothing here, so a later `apt-get install docker-compose` does not clash.
COMPOSE_PLUGIN_DIR=/usr/local/lib/docker/cli-plugins

# The apt source and pin for Debian unstable (only its docker-compose package is used from it
# on the host; the pin keeps every other package at its current suite).
UNSTABLE_SOURCE=/etc/apt/sources.list.d/elastic-cart-unstable.sources
UNSTABLE_PIN=/etc/apt/preferences.d/elastic-cart-unstable

# Filled by prepare_images: the mode used and the extra arguments of `compose up`.
# shellcheck disable=SC2034 # read by the scripts that source this file
IMAGES_MODE=""
COMPOSE_UP_ARGS=()

log() {
    if [[ -t 2 ]]; then
        printf '\033[1m[%s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2
    else
        printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
    fi
}
die() { log "ERROR: $*"; exit 1; }

# --- Compose v2 ---------------------------------------------------------------------------

# Adds the unstable apt source with a low pin (100: never chosen unless asked for with
# -t unstable) and refreshes the package lists once.
add_unstable_apt_source() {
    if [[ ! -f $UNSTABLE_SOURCE ]]; then
        log "adding Debian unstable as an apt source, pinned to 100 ($UNSTABLE_SOURCE)"
        cat >"$UNSTABLE_SOURCE" <<EOF
# Added by elastic-cart scripts/lib/standin-images.sh for the Compose v2 plugin.
Types: deb
URIs: $DEBIAN_MIRROR
Suites: unstable
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    if [[ ! -f $UNSTABLE_PIN ]]; then
        cat >"$UNSTABLE_PIN" <<'EOF'
# Added by elastic-cart scripts/lib/standin-images.sh: take nothing from unstable unless
# asked for with `apt-get -t unstable`, so no installed package is upgraded by it.
Package: *
Pin: release a=unstable
Pin-Priority: 100
EOF
    fi
    local policy
    policy=$(apt-cache policy docker-compose 2>/dev/null || true)
    if [[ $policy != *" unstable/"* ]]; then
        log "apt-get update"
        apt-get update -qq
    fi
}

# Makes `docker compose` (v2) work. Debian unstable's docker-compose package is the v2 plugin;
# installing it outright is done only if apt would install nothing else, because on bookworm
# it pulls a new libc6 and docker.io (which would restart the daemon). Otherwise the plugin
# binary (Go, needs only glibc >= 2.34) is taken out of the .deb with dpkg-deb.
ensure_compose_v2() {
    if docker compose version >/dev/null 2>&1; then
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "docker compose (v2) is missing and installing it needs root"
    add_unstable_apt_source
    local plan
    plan=$(apt-get install -s -t unstable docker-compose 2>/dev/null | grep '^Inst ' || true)
    if [[ $(wc -l <<<"$plan") -eq 1 && $plan == "Inst docker-compose "* ]]; then
        log "installing docker-compose (Compose v2) from unstable"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t unstable docker-compose
    else
        log "installing from unstable's docker-compose would also upgrade $(($(wc -l <<<"$plan") - 1)) other packages;"
        log "extracting only the plugin binary into $COMPOSE_PLUGIN_DIR"
        local tmp
        tmp=$(mktemp -d)
        # `apt-get download` writes into the current directory; _apt cannot write to a
        # mktemp directory, so let it download as root without the sandbox warning.
        (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root -t unstable docker-compose)
        dpkg-deb --fsys-tarfile "$tmp"/docker-compose_*.deb |
            tar -x -C "$tmp" ./usr/libexec/docker/cli-plugins/docker-compose
        install -D -m 0755 "$tmp/usr/libexec/docker/cli-plugins/docker-compose" \
            "$COMPOSE_PLUGIN_DIR/docker-compose"
        rm -rf "$tmp"
    fi
    docker compose version >/dev/null 2>&1 || die "docker compose still does not work"
    log "$(docker compose version)"
}

# --- Images ---------------------------------------------------------------------------------

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# True if the official images are here or can be pulled. Pulling is tried only for the first
# missing image, with a time limit: without a registry it fails within seconds.
official_images_available() {
    local image missing=()
    for image in "$OFFICIAL_REDIS_IMAGE" "$OFFICIAL_NGINX_IMAGE" "$OFFICIAL_PROMETHEUS_IMAGE" \
        "$OFFICIAL_RUST_IMAGE" "$OFFICIAL_RUNTIME_IMAGE"; do
        image_exists "$image" || missing+=("$image")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "trying to pull ${missing[0]} (is a registry reachable?)"
    timeout 60 docker pull -q "${missing[0]}" >/dev/null 2>&1
}

# Runs a command inside a rootfs as if it were a small machine: a policy-rc.d so that
# package scripts start no service, the host's resolv.conf to reach the mirror, /proc mounted
# for package scripts that read it.
in_chroot() {
    local root=$1
    shift
    mount -t proc proc "$root/proc"
    local status=0
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@" || status=$?
    umount "$root/proc"
    return $status
}

# A minimal Debian unstable with ca-certificates, debootstrapped once into
# $STANDIN_DIR/rootfs-base and kept (a failed run leaves no half tree behind).
ensure_base_rootfs() {
    local dir="$STANDIN_DIR/rootfs-base"
    [[ -f $dir/.complete ]] && return 0
    [[ -n $DEBIAN_MIRROR ]] ||
        die "no Debian mirror in this machine's apt sources; set DEBIAN_MIRROR to one"
    command -v debootstrap >/dev/null || {
        log "apt-get install debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    log "debootstrapping a minimal Debian $STANDIN_SUITE into $dir (once; about 30 s)"
    remove_tree "$dir.tmp"
    remove_tree "$dir"
    mkdir -p "$STANDIN_DIR"
    debootstrap --variant=minbase --include=ca-certificates "$STANDIN_SUITE" "$dir.tmp" \
        "$DEBIAN_MIRROR" >"$STANDIN_DIR/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $STANDIN_DIR/debootstrap.log"
    # No service may start inside the chroot while packages install.
    printf '#!/bin/sh\nexit 101\n' >"$dir.tmp/usr/sbin/policy-rc.d"
    chmod 0755 "$dir.tmp/usr/sbin/policy-rc.d"
    # debootstrap leaves the downloaded .debs behind: 90 MB that no image needs.
    rm -f "$dir.tmp"/var/cache/apt/archives/*.deb
    rm -rf "$dir.tmp"/var/lib/apt/lists/*
    touch "$dir.tmp/.complete"
    mv "$dir.tmp" "$dir"
}

# Makes $STANDIN_DIR/rootfs-NAME: a copy of the base with PACKAGES installed, then runs
# the shell snippet SETUP inside it, and trims apt's caches.
ensure_service_rootfs() {
    local name=$1 packages=$2 setup=$3
    local dir="$STANDIN_DIR/rootfs-$name"
    [[ -f $dir/.complete ]] && return 0
    ensure_base_rootfs
    log "installing $packages into a copy of the base ($dir)"
    remove_tree "$dir.tmp"
    remove_tree "$dir"
    cp -a "$STANDIN_DIR/rootfs-base" "$dir.tmp"
    rm -f "$dir.tmp/.complete"
    # shellcheck disable=SC2086 # $packages is a word list on purpose.
    # The mirror may serve a dated snapshot whose Release file is past its Valid-Until (the
    # host's apt is set up to accept that too); debootstrap itself does not check it.
    in_chroot "$dir.tmp" sh -ec "apt-get update -qq -o Acquire::Check-Valid-Until=false \\
            -o Acquire::Check-Date=false
        apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends $packages >/dev/null
        $setup
        apt-get clean
        rm -rf /var/lib/apt/lists/*" ||
        die "installing $packages in the $name rootfs failed"
    touch "$dir.tmp/.complete"
    mv "$dir.tmp" "$dir"
}

# Removes a (possibly half-made) tree, first unmounting a /proc that an interrupted run
# may have left mounted in it; never crosses into another file system.
remove_tree() {
    local dir=$1
    if mountpoint -q "$dir/proc" 2>/dev/null; then umount "$dir/proc"; fi
    rm -rf --one-file-system "$dir"
}

# `docker import` of a rootfs (without our .complete marker) with image settings.
import_rootfs() {
    local dir=$1 image=$2
    shift 2
    log "docker import $dir -> $image"
    tar --numeric-owner --exclude=./.complete --exclude=./proc/* -C "$dir" -c . |
        docker import "$@" - "$image" >/dev/null
}

# The runtime base of the app image: Debian unstable with ca-certificates.
ensure_base_image() {
    image_exists "$STANDIN_BASE_IMAGE" && return 0
    ensure_base_rootfs
    import_rootfs "$STANDIN_DIR/rootfs-base" "$STANDIN_BASE_IMAGE" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]'
}

# Redis like the official image: data in /data (the compose file mounts its named volume
# there), redis-cli on PATH, and protected mode off (the official image builds Redis with it
# off; Debian's is on, which refuses the replicas' connections from other containers when no
# password is set). The entrypoint adds `--protected-mode no` in front of the compose file's
# own arguments, so those still win.
ensure_redis_image() {
    image_exists "$STANDIN_REDIS_IMAGE" && return 0
    # shellcheck disable=SC2016 # the snippet runs in the chroot: no expansion here.
    ensure_service_rootfs redis "redis-server redis-tools" '
        mkdir -p /data
        cat >/usr/local/bin/docker-entrypoint.sh <<"EOF"
#!/bin/sh
# Stand-in for the official redis image: protected mode off, as there.
if [ "$1" = "redis-server" ]; then
    shift
    exec redis-server --protected-mode no "$@"
fi
exec "$@"
EOF
        chmod 0755 /usr/local/bin/docker-entrypoint.sh'
    import_rootfs "$STANDIN_DIR/rootfs-redis" "$STANDIN_REDIS_IMAGE" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'WORKDIR /data' \
        --change 'EXPOSE 6379' \
        --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
        --change 'CMD ["redis-server"]'
}

# nginx like the official image: in the foreground, logs on the container's output (the
# compose file mounts nginx.conf over /etc/nginx/nginx.conf).
ensure_nginx_image() {
    image_exists "$STANDIN_NGINX_IMAGE" && return 0
    ensure_service_rootfs nginx "nginx" '
        nginx -v
        ln -sf /dev/stdout /var/log/nginx/access.log
        ln -sf /dev/stderr /var/log/nginx/error.log'
    import_rootfs "$STANDIN_DIR/rootfs-nginx" "$STANDIN_NGINX_IMAGE" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'EXPOSE 80' \
        --change 'CMD ["nginx", "-g", "daemon off;"]'
}

# Prometheus like the official image: /usr/bin/prometheus as the entrypoint, run as nobody,
# its database in /prometheus, promtool on PATH (the compose file's health check uses it).
# The compose file passes every flag itself (config file, rules, database path), so the
# stand-in needs no default configuration of its own.
ensure_prometheus_image() {
    image_exists "$STANDIN_PROMETHEUS_IMAGE" && return 0
    ensure_service_rootfs prometheus "prometheus" '
        prometheus --version
        mkdir -p /prometheus
        chown nobody:nogroup /prometheus'
    import_rootfs "$STANDIN_DIR/rootfs-prometheus" "$STANDIN_PROMETHEUS_IMAGE" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'USER nobody' \
        --change 'WORKDIR /prometheus' \
        --change 'EXPOSE 9090' \
        --change 'ENTRYPOINT ["/usr/bin/prometheus"]' \
        --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
}

# The app image: the Dockerfile's runtime stage, with the host-built binary instead of the
# build stage's. Rebuilt on every call (Docker's layer cache makes that quick when nothing
# changed), so the image always holds the current binary and static files.
#
# Arguments (both optional): the image name (default $STANDIN_APP_IMAGE) and the version the
# replicas show (APP_VERSION; default empty: the crate's), so a second image that differs
# only by its version can be built for a rolling update.
build_app_image() {
    local image=${1:-$STANDIN_APP_IMAGE} version=${2:-}
    local bin="${ELASTIC_CART_BIN:-}"
    if [[ -z $bin ]]; then
        bin="$REPO_ROOT/target/release/elastic-cart"
        if [[ ${SKIP_CARGO_BUILD:-0} != 1 ]]; then
            log "cargo build --release --locked"
            (cd "$REPO_ROOT" && cargo build --release --locked --quiet) || die "cargo build failed"
        fi
    fi
    [[ -x $bin ]] || die "no binary at $bin (run cargo build --release)"
    ensure_base_image
    local ctx="$STANDIN_DIR/app-context"
    rm -rf "$ctx"
    mkdir -p "$ctx"
    cp "$bin" "$ctx/elastic-cart"
    cp -r "$REPO_ROOT/static" "$ctx/static"
    # Same runtime settings as the Dockerfile's last stage.
    cat >"$ctx/Dockerfile" <<EOF
FROM $STANDIN_BASE_IMAGE
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app
COPY elastic-cart /usr/local/bin/elastic-cart
COPY static static
USER app
ENV LISTEN_ADDR=0.0.0.0:3000 STATIC_DIR=/app/static APP_VERSION=$version
LABEL org.opencontainers.image.version=$version
EXPOSE 3000
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \\
    CMD ["elastic-cart", "healthcheck"]
ENTRYPOINT ["elastic-cart"]
LABEL org.elastic-cart.standin=app
EOF
    log "docker build $image (runtime stage with $bin${version:+, APP_VERSION=$version})"
    # The classic builder: this machine's docker CLI may have no buildx.
    local output
    output=$(DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" 2>&1) || {
        printf '%s\n' "$output" >&2
        die "docker build of the app stand-in failed"
    }
    # The previous app stand-in, untagged by this build, is of no more use.
    docker image prune -f --filter label=org.elastic-cart.standin=app >/dev/null
}

build_standin_images() {
    ensure_base_image
    ensure_redis_image
    ensure_nginx_image
    ensure_prometheus_image
    build_app_image "$STANDIN_APP_IMAGE" ""
}

# Chooses the images and sets what `compose` needs: exports APP_IMAGE, REDIS_IMAGE,
# NGINX_IMAGE, PROMETHEUS_IMAGE for stand-ins, and COMPOSE_UP_ARGS for `compose up`.
prepare_images() {
    local mode=$ELASTIC_CART_IMAGES
    if [[ $mode == auto ]]; then
        if official_images_available; then mode=official; else mode=standin; fi
    fi
    case $mode in
    official)
        log "using the official images; the app image is built by compose from the Dockerfile"
        unset APP_IMAGE REDIS_IMAGE NGINX_IMAGE PROMETHEUS_IMAGE
        COMPOSE_UP_ARGS=(--build)
        ;;
    standin)
        log "no registry: using local stand-in images built from Debian $STANDIN_SUITE packages"
        build_standin_images
        export APP_IMAGE=$STANDIN_APP_IMAGE REDIS_IMAGE=$STANDIN_REDIS_IMAGE \
            NGINX_IMAGE=$STANDIN_NGINX_IMAGE PROMETHEUS_IMAGE=$STANDIN_PROMETHEUS_IMAGE
        # No --build: the compose file's `build: .` needs the rust image. The app image exists,
        # so compose uses it as it is; --pull never keeps compose from asking a registry.
        COMPOSE_UP_ARGS=(--pull never)
        ;;
    *) die "ELASTIC_CART_IMAGES must be auto, standin or official, not '$mode'" ;;
    esac
    # shellcheck disable=SC2034 # read by the scripts that source this file
    IMAGES_MODE=$mode
}

# The compose files (one today; an array so a machine-specific override can be added).
COMPOSE_FILES=("$REPO_ROOT/docker-compose.yml")

# docker compose on the repository's compose file(s). The project name is
# $COMPOSE_PROJECT_NAME (each script sets its own).
compose() {
    local file args=()
    for file in "${COMPOSE_FILES[@]}"; do args+=(-f "$file"); done
    docker compose --project-directory "$REPO_ROOT" "${args[@]}" "$@"
}

# `compose up -d` with the image choice's arguments, plus any given here.
compose_up() {
    compose up -d "${COMPOSE_UP_ARGS[@]}" "$@"
}

# Waits until http://127.0.0.1:$SHOP_PORT answers /api/products with 200, up to $1 seconds.
wait_for_shop() {
    local limit=${1:-60} url="http://127.0.0.1:${SHOP_PORT:-8080}/api/products"
    local deadline=$((SECONDS + limit))
    until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}
