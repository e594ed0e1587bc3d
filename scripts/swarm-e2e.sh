#!/usr/bin/env bash
# End-to-end test of the elastic-cart fleet on Docker Swarm, deployed from the stack file
# users deploy (deploy/swarm/stack.yml) on a single-node swarm: round robin over the tasks,
# a task killed (Swarm replaces it), scale 3 -> 5 -> 2, and a rolling update to a second
# app image (another APP_VERSION) under reads and writes; then the Sentinel variant
# (deploy/swarm/stack.ha.yml) with its Redis primary killed under writes, after which every
# replica must answer changes again. After each deploy it checks the networks: the store's
# network internal, nginx not on it.
# The scenario is the one of the loopback fleet and of compose (testkit/src/scenario.rs), run by the
# `fleet-scenario` program, which prints what each step proves.
#
#   scripts/swarm-e2e.sh            # as root; exit 0 only if every check passed
#
# It leaves the engine as it found it, also on failure or ^C (a trap): the stack it
# deployed removed with its volume, the node label it added taken off, the second app image
# removed, and, if the engine was in no swarm before, the swarm left and the networks that
# `docker swarm init` made removed. An engine already in a swarm is used only if it is a
# single-node swarm's manager (the images are local to this node) without a stack of this
# name. The stand-in images stay, as the cache scripts/lib/standin-images.sh keeps.
#
# Images: as scripts/compose-e2e.sh (scripts/lib/standin-images.sh): the official redis and
# nginx images where a registry is reachable (the app images are then built from the
# Dockerfile), else local stand-ins built from Debian packages. Two app images are built:
# the first with the crate's version, the next with APP_VERSION=<crate>+next.
#
# Environment:
#   SHOP_PORT             host port of nginx (default 8080)
#   SWARM_STACK           stack name (default elastic-cart-swarm-e2e)
#   ELASTIC_CART_IMAGES   auto | standin | official (see scripts/lib/standin-images.sh)
#   SWARM_E2E_HA=0        skip the Sentinel variant
#   SWARM_E2E_MAIN=0      skip the plain stack (run only the Sentinel variant)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib/standin-images.sh
source "$SCRIPT_DIR/lib/standin-images.sh"

export SHOP_PORT="${SHOP_PORT:-8080}"
STACK="${SWARM_STACK:-elastic-cart-swarm-e2e}"
STACK_FILE="$REPO_ROOT/deploy/swarm/stack.yml"
HA_FILE="$REPO_ROOT/deploy/swarm/stack.ha.yml"
REDIS_LABEL=elastic-cart.redis
started_at=$SECONDS

# What this run changed, so that the trap undoes exactly that.
initialised_swarm=0
networks_before=""
last_reset=-100
labelled_node=""
deployed=0
built_images=()

swarm_state() { docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null; }

# The stack's containers (running or not) and networks; empty once `docker stack rm` is done.
stack_leftovers() {
    docker ps -aq --filter "label=com.docker.stack.namespace=$STACK"
    docker network ls -q --filter "label=com.docker.stack.namespace=$STACK"
}

# Removes the stack and waits until its containers and networks are gone, then its volume.
remove_stack() {
    docker stack rm "$STACK" >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 90))
    while [[ -n $(stack_leftovers) ]]; do
        ((SECONDS < deadline)) || { log "the stack's containers or networks are still there"; return 1; }
        sleep 0.5
    done
    local volume status=0
    for volume in $(docker volume ls -q --filter "label=com.docker.stack.namespace=$STACK"); do
        docker volume rm "$volume" >/dev/null || status=1
    done
    return $status
}

cleanup() {
    local status=$?
    # A second ^C must not stop the cleanup halfway.
    trap '' INT TERM
    trap - EXIT
    if [[ $status -ne 0 && $(swarm_state) == active ]]; then
        log "failed (exit $status); the stack's tasks and last log lines:"
        docker stack ps --no-trunc "$STACK" 2>&1 | head -40 | sed 's/^/    /' >&2 || true
        local service
        for service in $(docker stack services -q "$STACK" 2>/dev/null); do
            docker service logs --no-task-ids --tail 15 "$service" 2>&1 | sed 's/^/    /' >&2 || true
        done
    fi
    if [[ $(swarm_state) == active ]]; then
        if ((deployed)); then
            log "docker stack rm $STACK (and its volume)"
            remove_stack || status=1
        fi
        if [[ -n $labelled_node ]]; then
            docker node update --label-rm "$REDIS_LABEL" "$labelled_node" >/dev/null || status=1
        fi
        if ((initialised_swarm)); then
            log "docker swarm leave --force (this run initialised the swarm)"
            docker swarm leave --force >/dev/null || status=1
        fi
    fi
    # A swarm makes docker_gwbridge (when its first task starts) and ingress; leaving keeps
    # the bridge. Only those two, and only if they were not there before this run's init.
    local network
    if ((initialised_swarm)); then
        for network in docker_gwbridge ingress; do
            if ! grep -qx "$network" <<<"$networks_before" &&
                docker network inspect "$network" >/dev/null 2>&1; then
                docker network rm "$network" >/dev/null || status=1
            fi
        done
    fi
    local image
    for image in "${built_images[@]}"; do
        docker image rm "$image" >/dev/null 2>&1 || status=1
    done
    log "total time: $((SECONDS - started_at)) s"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ $(id -u) -eq 0 ]] || die "run as root (it may install packages and uses docker)"
command -v docker >/dev/null || die "docker is not installed (Debian package docker.io)"
docker info >/dev/null 2>&1 || die "the docker daemon does not answer"
command -v cargo >/dev/null || die "cargo is needed to build the scenario"
command -v curl >/dev/null || die "curl is needed (Debian package curl)"
if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$SHOP_PORT/" 2>/dev/null; then
    die "something else already answers on port $SHOP_PORT (set SHOP_PORT)"
fi

# 1. Images: redis and nginx, and two app images that differ by their version.
prepare_images
crate_version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml" | head -n 1)
NEXT_VERSION="${crate_version}+next"
if [[ $IMAGES_MODE == standin ]]; then
    NEXT_IMAGE="elastic-cart-standin-app:next"
    built_images+=("$NEXT_IMAGE")
    build_app_image "$NEXT_IMAGE" "$NEXT_VERSION"
else
    export APP_IMAGE="elastic-cart:swarm-e2e"
    NEXT_IMAGE="elastic-cart:swarm-e2e-next"
    built_images+=("$APP_IMAGE" "$NEXT_IMAGE")
    log "docker build $APP_IMAGE and $NEXT_IMAGE (APP_VERSION=$NEXT_VERSION) from the Dockerfile"
    docker build -q -t "$APP_IMAGE" "$REPO_ROOT" >/dev/null
    docker build -q -t "$NEXT_IMAGE" --build-arg "APP_VERSION=$NEXT_VERSION" "$REPO_ROOT" >/dev/null
fi
log "images: mode=$IMAGES_MODE app=$APP_IMAGE next=$NEXT_IMAGE" \
    "redis=${REDIS_IMAGE:-$OFFICIAL_REDIS_IMAGE} nginx=${NGINX_IMAGE:-$OFFICIAL_NGINX_IMAGE}"

# 2. A swarm: this engine's own if it is in one, else a single-node swarm of this run's.
case $(swarm_state) in
inactive)
    log "docker swarm init --advertise-addr 127.0.0.1 (left again at the end)"
    networks_before=$(docker network ls --format '{{.Name}}')
    initialised_swarm=1
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
    ;;
active)
    [[ $(docker info --format '{{.Swarm.ControlAvailable}}') == true ]] ||
        die "this engine is in a swarm but not a manager: run this on a manager"
    [[ $(docker node ls -q | wc -l) -eq 1 ]] ||
        die "this swarm has several nodes; the test's images are local to this one (use a single-node swarm)"
    [[ -z $(docker stack ls --format '{{.Name}}' | grep -x "$STACK" || true) ]] ||
        die "a stack named $STACK already runs; remove it or set SWARM_STACK"
    log "using the single-node swarm this engine is already in"
    ;;
*) die "the engine's swarm state is $(swarm_state); expected inactive or active" ;;
esac
node=$(docker info --format '{{.Swarm.NodeID}}')
if [[ -z $(docker node inspect -f "{{index .Spec.Labels \"$REDIS_LABEL\"}}" "$node") ]]; then
    docker node update --label-add "$REDIS_LABEL=true" "$node" >/dev/null
    labelled_node=$node
fi

# Deploys the stack from the given files and waits until every service runs its tasks.
deploy() {
    local file args=()
    for file in "$@"; do args+=(-c "$file"); done
    log "docker stack deploy --resolve-image never ${args[*]} $STACK"
    deployed=1
    docker stack deploy --resolve-image never "${args[@]}" "$STACK" >/dev/null
    local deadline=$((SECONDS + 180)) pending
    while :; do
        # Services whose running tasks are fewer than asked for ("2/3"); global ones too.
        pending=$(docker stack services "$STACK" --format '{{.Name}} {{.Replicas}}' |
            awk '{ split($2, n, "/"); if (n[1] != n[2]) print }')
        [[ -z $pending ]] && break
        ((SECONDS < deadline)) || die "services not running after 180 s: $pending"
        sleep 1
    done
    wait_for_shop 60 || die "nginx does not answer on http://127.0.0.1:$SHOP_PORT"
    # Ready: the replica reaches the store, whichever replica answers (20 answers in a row).
    local ready=0
    deadline=$((SECONDS + 120))
    while ((ready < 20)); do
        if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$SHOP_PORT/readyz" 2>/dev/null; then
            ready=$((ready + 1))
        else
            ready=0
            ((SECONDS < deadline)) || die "/readyz does not answer 200 within 120 s"
            sleep 0.5
        fi
    done
    log "stack up and ready after $((SECONDS - started_at)) s"
    check_networks
}

# The stack's networks as stack.yml means them: `store` is internal, the app is on `front`
# and `store`, nginx on `front` only (the balancer has no route to Redis), and every store
# service (redis; in the Sentinel variant the replicas and sentinels too) on `store` only.
check_networks() {
    local front store internal service name want have id
    front=$(docker network inspect -f '{{.Id}}' "${STACK}_front") || die "no network ${STACK}_front"
    store=$(docker network inspect -f '{{.Id}}' "${STACK}_store") || die "no network ${STACK}_store"
    internal=$(docker network inspect -f '{{.Internal}}' "${STACK}_store")
    [[ $internal == true ]] || die "network ${STACK}_store is not internal (Internal=$internal)"
    for service in $(docker stack services --format '{{.Name}}' "$STACK"); do
        name=${service#"${STACK}_"}
        case $name in
        app) want="front store" ;;
        nginx) want="front" ;;
        *) want="store" ;;
        esac
        have=""
        for id in $(docker service inspect -f '{{range .Spec.TaskTemplate.Networks}}{{.Target}} {{end}}' "$service"); do
            case $id in
            "$front") have+=" front" ;;
            "$store") have+=" store" ;;
            *) have+=" $(docker network inspect -f '{{.Name}}' "$id" 2>/dev/null || echo "$id")" ;;
            esac
        done
        have=$(tr ' ' '\n' <<<"$have" | sort | xargs)
        [[ $have == "$want" ]] || die "service $name is on the networks [$have], not [$want]"
    done
    log "PASS  networks: ${STACK}_store internal; nginx on front only, app on front and store, the store's services on store only"
}

# With the Sentinel variant: true once the primary the sentinels name has both replicas
# online and every sentinel knows them and its two peers, and (with "rejoined") the `redis` task is one of them with its link up.
replication_settled() {
    local sentinel redis_task old_primary new_primary
    sentinel=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_sentinel" | head -n 1)
    new_primary=$(docker exec "$sentinel" sh -c 'redis-cli -h "$(redis-cli -p 26379 SENTINEL get-master-addr-by-name carts | head -n 1)" INFO replication' 2>/dev/null || true)
    # Connected is not enough: a replica still loading the primary's data confirms no WAIT.
    [[ $new_primary == *role:master* && $(grep -c 'state=online' <<<"$new_primary") -eq 2 ]] ||
        return 1
    if [[ ${1:-} != rejoined ]]; then
        # Every sentinel must know both replicas too: a sentinel learns of replicas only from
        # the primary's INFO (every 10 s), and one that knows none when the primary dies
        # finds no replica to promote, then or ever (-failover-abort-no-good-slave).
        # A sentinel also keeps replicas and peers that are gone (tasks that Swarm
        # restarted during the deploy, on new addresses): then, as docs/design.md tells users,
        # SENTINEL RESET, at most every 20 s so that it can learn them again.
        local id master settled=0
        for id in $(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_sentinel"); do
            master=$(docker exec "$id" redis-cli -p 26379 SENTINEL master carts 2>/dev/null | tr '\n' ' ' || true)
            [[ $master == *"num-slaves 2 "* && $master == *"num-other-sentinels 2 "* ]] && continue
            settled=1
            if [[ $master =~ num-slaves\ ([0-9]+)\ .*num-other-sentinels\ ([0-9]+)\  ]] &&
                ((BASH_REMATCH[1] > 2 || BASH_REMATCH[2] > 2)) && ((SECONDS - last_reset > 20)); then
                log "a sentinel knows gone replicas or peers: SENTINEL RESET carts on each"
                local each
                for each in $(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_sentinel"); do
                    docker exec "$each" redis-cli -p 26379 SENTINEL RESET carts >/dev/null || true
                done
                last_reset=$SECONDS
            fi
            break
        done
        return $settled
    fi
    redis_task=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_redis" | head -n 1)
    old_primary=$(docker exec "$redis_task" redis-cli INFO replication 2>/dev/null || true)
    [[ $old_primary == *role:slave* && $old_primary == *master_link_status:up* ]]
}

wait_for() {
    local what=$1 deadline=$((SECONDS + 90))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || die "$what: not within 90 s"
        sleep 1
    done
}

log "building the scenario (cargo build --release -p testkit --bin fleet-scenario)"
(cd "$REPO_ROOT" && cargo build --release --locked --quiet -p testkit --bin fleet-scenario)
run_scenario() {
    "$REPO_ROOT/target/release/fleet-scenario" --shop-url "http://127.0.0.1:$SHOP_PORT" \
        --swarm-stack "$STACK" --next-image "$NEXT_IMAGE" "$@"
}

# 3. The stack as users deploy it, and the scenario: round robin, kill, scale, update.
if [[ ${SWARM_E2E_MAIN:-1} != 0 ]]; then
    deploy "$STACK_FILE"
    run_scenario
fi

# 4. The Sentinel variant: the store's primary killed under writes (the scenario's step 7).
if [[ ${SWARM_E2E_HA:-1} != 0 ]]; then
    log "the stack with stack.ha.yml (Sentinel); docker stack rm first"
    remove_stack
    deploy "$STACK_FILE" "$HA_FILE"
    wait_for "both Redis replicas following the primary" replication_settled
    run_scenario --store-failover
    # Swarm restarts the killed primary; its start script must make it a replica of the
    # promoted one (not a second primary): the `redis` task is a replica with its link up,
    # and the primary the sentinels name has both replicas again.
    log "waiting for the old primary to rejoin as a replica of the promoted one"
    wait_for "the killed primary rejoining as a replica" replication_settled rejoined
    log "PASS  the killed primary is back, as a replica of the promoted one"
fi
