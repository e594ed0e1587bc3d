#!/usr/bin/env bash
# End-to-end test of the elastic-cart fleet as docker-compose.yml runs it: Redis, three app
# replicas and nginx round robin. It kills, stops, restarts and scales replicas under load
# and checks, through nginx, that no request fails and no cart is lost. The scenario is
# the one the loopback fleet test runs (testkit/src/scenario.rs), here through its
# `fleet-scenario` program, which prints what each step proves.
#
#   scripts/compose-e2e.sh            # as root; exit 0 only if every check passed
#
# What it does:
#   1. makes `docker compose` (v2) work, from Debian unstable's package if needed;
#   2. picks the images: the official ones where a registry is reachable (the app image is
#      then built by compose from the Dockerfile), else local stand-ins built from Debian
#      packages (scripts/lib/standin-images.sh; cached, so only the first run pays);
#   3. starts the stack on a project of its own with the `observability` profile
#      (Prometheus), waits for the shop, runs the scenario; Prometheus scrapes the fleet
#      throughout, and is then asked (HTTP API on loopback) whether every running replica
#      is an up target, whether its metadata has every family docs/operations.md lists, and
#      whether the fleet-wide rate rule has a value (scripts/lib/prometheus-checks.sh);
#   4. starts it again with docker-compose.ha.yml (Redis with two replicas and three
#      sentinels) and kills the Redis primary under writes (the scenario's step 7);
#   5. always takes the stack down again, volumes included (a trap), also on failure or ^C.
#
# Safe to rerun: it first removes whatever an interrupted earlier run left of its project.
#
# Environment:
#   SHOP_PORT               host port of nginx (default 8080)
#   PROMETHEUS_PORT         host port of Prometheus (default 9090)
#   COMPOSE_PROJECT_NAME    default elastic-cart-e2e
#   ELASTIC_CART_IMAGES     auto | standin | official (see scripts/lib/standin-images.sh)
#   KEEP_STACK=1            leave the stack running at the end (for poking at it); the next
#                           run still starts from scratch
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib/standin-images.sh
source "$SCRIPT_DIR/lib/standin-images.sh"
# shellcheck source=scripts/lib/prometheus-checks.sh
source "$SCRIPT_DIR/lib/prometheus-checks.sh"

export SHOP_PORT="${SHOP_PORT:-8080}"
export PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-elastic-cart-e2e}"
started_at=$SECONDS

# Takes the whole project down: containers, network and the Redis volume. On failure it
# first shows the end of the logs, which is what one needs to see why.
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ $status -ne 0 ]] && docker compose version >/dev/null 2>&1; then
        log "failed (exit $status); last log lines of the stack:"
        compose logs --no-color --tail 15 2>&1 | sed 's/^/    /' >&2 || true
        # nginx's errors and non-2xx answers tell why a request failed (which replica, and
        # whether the connect, the send or the read did).
        log "nginx errors and failed requests:"
        compose logs --no-color nginx 2>&1 |
            grep -E '\[(error|crit|alert|emerg)\]|" [45][0-9][0-9] ' | tail -40 |
            sed 's/^/    /' >&2 || true
    fi
    if [[ ${KEEP_STACK:-0} == 1 ]]; then
        log "KEEP_STACK=1: leaving project $COMPOSE_PROJECT_NAME running"
    elif docker compose version >/dev/null 2>&1; then
        log "docker compose down -v"
        # With the profile, so that Prometheus goes too.
        COMPOSE_PROFILES=observability compose down -v --remove-orphans --timeout 15 \
            >/dev/null 2>&1 || true
    fi
    log "total time: $((SECONDS - started_at)) s"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ $(id -u) -eq 0 ]] || die "run as root (it may install packages and uses docker)"
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the docker daemon does not answer"
command -v cargo >/dev/null || die "cargo is needed to build the scenario"
command -v curl >/dev/null || die "curl is needed"
command -v jq >/dev/null || die "jq is needed (apt-get install jq)"

# 1. Compose v2.
ensure_compose_v2

# 2. Images.
prepare_images
log "images: mode=$IMAGES_MODE app=${APP_IMAGE:-<built from Dockerfile>}" \
    "redis=${REDIS_IMAGE:-$OFFICIAL_REDIS_IMAGE} nginx=${NGINX_IMAGE:-$OFFICIAL_NGINX_IMAGE}"

# 3. A fresh stack: nothing left over from an interrupted run (old containers, old carts).
log "removing leftovers of project $COMPOSE_PROJECT_NAME"
COMPOSE_PROFILES=observability compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1 ||
    true
if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$SHOP_PORT/" 2>/dev/null; then
    die "something else already answers on port $SHOP_PORT (set SHOP_PORT)"
fi
if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PROMETHEUS_PORT/" 2>/dev/null; then
    die "something else already answers on port $PROMETHEUS_PORT (set PROMETHEUS_PORT)"
fi

# The first stack runs the `observability` profile: COMPOSE_PROFILES is the environment's
# `--profile observability`, exported so that the scenario's own `docker compose` commands
# (scale, start) keep Prometheus in the project too.
export COMPOSE_PROFILES=observability
log "docker compose --profile observability up -d ${COMPOSE_UP_ARGS[*]} --wait (3 replicas)"
compose_up --wait --wait-timeout 120 >/dev/null 2>&1 || {
    compose ps -a >&2 || true
    die "the stack did not become healthy"
}
wait_for_shop 60 || die "nginx does not answer on http://127.0.0.1:$SHOP_PORT"
log "stack up after $((SECONDS - started_at)) s"
wait_for_prometheus 60
check_prometheus_rules_in_image
check_prometheus_targets 30
# Before any shopper or failure: every documented family is there from the first scrapes.
check_prometheus_metadata

# 4. The scenario; a failure ends the script (the EXIT trap takes the stack down). Each file
# and argument is passed on its own, so paths with spaces survive.
log "building the scenario (cargo build --release -p testkit --bin fleet-scenario)"
(cd "$REPO_ROOT" && cargo build --release --locked --quiet -p testkit --bin fleet-scenario)
# Runs the scenario on the stack of COMPOSE_FILES, with any extra arguments ("$@").
run_scenario() {
    local file arg args=()
    for file in "${COMPOSE_FILES[@]}"; do args+=("--compose-file=$file"); done
    for arg in "${COMPOSE_UP_ARGS[@]}"; do args+=("--compose-up-arg=$arg"); done
    "$REPO_ROOT/target/release/fleet-scenario" \
        --shop-url "http://127.0.0.1:$SHOP_PORT" \
        --project "$COMPOSE_PROJECT_NAME" \
        --project-dir "$REPO_ROOT" \
        "${args[@]}" "$@"
}
run_scenario

# Prometheus has scraped the fleet through the scenario's kills and scaling: its targets
# must be the replicas running now, and what it learnt must be complete.
prometheus_checks_started=$SECONDS
check_prometheus_targets 30
check_prometheus_metadata
check_prometheus_fleet_rate 30
log "Prometheus checks after the scenario took $((SECONDS - prometheus_checks_started)) s"

# 5. The same stack on a replicated store (docker-compose.ha.yml: two Redis replicas and
# three sentinels, the app on the Sentinel URL with REDIS_WAIT_REPLICAS=1): the Redis
# primary is killed under writes, and every acknowledged change must survive.
log "the stack again with docker-compose.ha.yml (Sentinel); docker compose down -v first"
compose down -v --remove-orphans --timeout 15 >/dev/null 2>&1 || true
# Without Prometheus: the failover is about the store, and the first stack checked the scrape.
unset COMPOSE_PROFILES
COMPOSE_FILES+=("$REPO_ROOT/docker-compose.ha.yml")
compose_up --wait --wait-timeout 120 >/dev/null 2>&1 || {
    compose ps -a >&2 || true
    die "the Sentinel stack did not become healthy"
}
wait_for_shop 60 || die "nginx does not answer on http://127.0.0.1:$SHOP_PORT"
log "Sentinel stack up after $((SECONDS - started_at)) s"
run_scenario --store-failover
