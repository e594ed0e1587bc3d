#!/usr/bin/env bash
# A narrated demo of elastic-cart's elasticity, for a person watching a terminal.
#
#   scripts/demo.sh                 # as root; about a minute once the images exist
#   scripts/demo.sh --shoppers 8    # with 8 background shoppers (default 4; 0 for none)
#
# It brings up the compose stack (Redis with two replicas and three sentinels, 3 app
# replicas, nginx round robin without sticky sessions), fills a cart through nginx with
# curl, shows which replicas answer, kills one, shows the cart intact and served by the
# others, scales to 5 and back to 2, kills the Redis primary and shows the cart survive
# the failover, and tears everything down. Each step says what it proves. Meanwhile a few
# background shoppers (curl, each with its own cookie jar) keep reading and filling their
# carts through nginx, so http://localhost:$SHOP_PORT/fleet moves while the demo runs; at
# the end it says how their requests were answered.
#
# It prepares Compose v2 and the images exactly like scripts/compose-e2e.sh
# (scripts/lib/standin-images.sh): official images where a registry is reachable, local
# stand-ins built from Debian packages where not.
#
# Environment:
#   SHOP_PORT            host port of nginx (default 8080)
#   COMPOSE_PROJECT_NAME default elastic-cart-demo
#   DEMO_PAUSE           seconds to pause between steps (default 2; 0 for none)
#   DEMO_STEP=1          wait for Enter between steps instead (when a person drives it)
#   KEEP_STACK=1         leave the stack running at the end, to shop in a browser
#   DEMO_STORE=single    docker-compose.yml alone (one Redis), without the failover step;
#                        default `ha`: with docker-compose.ha.yml
#   DEMO_SHOPPERS        background shoppers when --shoppers is not given (default 4)
set -euo pipefail

SHOPPERS="${DEMO_SHOPPERS:-4}"
while (($#)); do
    case $1 in
    --shoppers)
        (($# >= 2)) || { echo "demo.sh: --shoppers needs a number" >&2 && exit 2; }
        SHOPPERS="$2" && shift 2
        ;;
    --shoppers=*) SHOPPERS="${1#*=}" && shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' && exit 0 ;;
    *) echo "demo.sh: unknown argument $1 (try --help)" >&2 && exit 2 ;;
    esac
done
if ! [[ $SHOPPERS =~ ^[0-9]{1,3}$ ]] || ((10#$SHOPPERS > 200)); then
    echo "demo.sh: --shoppers takes a number from 0 to 200, not '$SHOPPERS'" >&2
    exit 2
fi
SHOPPERS=$((10#$SHOPPERS))

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib/standin-images.sh
source "$SCRIPT_DIR/lib/standin-images.sh"

export SHOP_PORT="${SHOP_PORT:-8080}"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-elastic-cart-demo}"
SHOP="http://127.0.0.1:$SHOP_PORT"
COOKIES="$(mktemp)" # the demo shopper's cookie jar: one browser, one session
DEMO_STORE="${DEMO_STORE:-ha}"
case $DEMO_STORE in
ha) COMPOSE_FILES+=("$REPO_ROOT/docker-compose.ha.yml") ;;
single) ;;
*) die "DEMO_STORE=$DEMO_STORE: use ha or single" ;;
esac

if [[ -t 1 ]]; then BOLD=$'\033[1m' DIM=$'\033[2m' RESET=$'\033[0m'; else BOLD="" DIM="" RESET=""; fi

LOAD_DIR="$(mktemp -d)" # the background shoppers' cookie jars and answers
SHOPPER_PIDS=()

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_shoppers
    rm -f "$COOKIES"
    rm -rf "$LOAD_DIR"
    if [[ ${KEEP_STACK:-0} == 1 ]]; then
        log "KEEP_STACK=1: the shop stays at $SHOP (take it down with:" \
            "COMPOSE_PROJECT_NAME=$COMPOSE_PROJECT_NAME docker compose down -v)"
    elif docker compose version >/dev/null 2>&1; then
        narrate "Tearing down" "docker compose down -v: containers, network and the Redis volume go."
        compose down -v --remove-orphans --timeout 15 >/dev/null 2>&1 || true
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step=0
# narrate TITLE WHAT-IT-PROVES: a step's heading.
narrate() {
    step=$((step + 1))
    printf '\n%s== %d. %s%s\n' "$BOLD" "$step" "$1" "$RESET"
    printf '%s   %s%s\n' "$DIM" "$2" "$RESET"
}
pause() {
    if [[ ${DEMO_STEP:-0} == 1 && -t 0 ]]; then
        read -r -p "   (Enter for the next step) " _
    else
        sleep "${DEMO_PAUSE:-2}"
    fi
}
# Shows a command, then runs it quietly (its output only if it fails). A command starting
# with "docker compose" runs through compose(), on this repository's compose file(s).
show() {
    printf '   %s$ %s%s\n' "$BOLD" "$*" "$RESET"
    local output
    if [[ $1 == docker && $2 == compose ]]; then
        output=$(compose "${@:3}" 2>&1 </dev/null) || { printf '%s\n' "$output"; return 1; }
    else
        output=$("$@" 2>&1 </dev/null) || { printf '%s\n' "$output"; return 1; }
    fi
}

# A JSON cart as one short line: "ceramic-mug x2, tea-sampler x1 (3 items, $46.75)".
SUMMARIZE_CART_PY=$(
    cat <<'EOF'
import json, sys
cart = json.load(sys.stdin)
lines = ", ".join(f"{item['product_id']} x{item['quantity']}" for item in cart["items"])
print(f"{lines or 'empty'} ({cart['item_count']} items, ${cart['total_cents'] / 100:.2f})")
EOF
)
summarize_cart() { python3 -c "$SUMMARIZE_CART_PY"; }

# GET /api/cart N times with the shopper's cookie; prints who served each and the cart. A
# request that gets no answer is shown as such; the demo goes on.
read_cart() {
    local n=$1 i out status served body
    for ((i = 1; i <= n; i++)); do
        if ! out=$(curl -s --max-time 10 -b "$COOKIES" -c "$COOKIES" -D - "$SHOP/api/cart"); then
            printf '   GET /api/cart -> no answer (curl failed)\n'
            continue
        fi
        status=$(head -1 <<<"$out" | awk '{print $2}')
        # nginx's own error pages (502, 504) name no replica.
        served=$(grep -i '^x-served-by:' <<<"$out" | awk '{print $2}' | tr -d '\r') || served=""
        body=$(sed '1,/^\r$/d' <<<"$out")
        printf '   GET /api/cart -> %s  served by %-12s  cart: %s\n' "$status" "${served:--}" \
            "$(summarize_cart <<<"$body" 2>/dev/null || echo "$body")"
    done
}

add_item() {
    local product=$1 quantity=$2
    printf '   %s$ curl -b cookies -c cookies -H "Content-Type: application/json" -d %s %s/api/cart/items%s\n' \
        "$BOLD" "'{\"product_id\":\"$product\",\"quantity\":$quantity}'" "$SHOP" "$RESET"
    local body
    if body=$(curl -s --max-time 10 -b "$COOKIES" -c "$COOKIES" \
        -H 'Content-Type: application/json' \
        -d "{\"product_id\":\"$product\",\"quantity\":$quantity}" "$SHOP/api/cart/items"); then
        printf '     -> %s\n' "$(summarize_cart <<<"$body" 2>/dev/null || echo "$body")"
    else
        printf '     -> no answer (curl failed)\n'
    fi
}

# One background shopper ($1): reads the cart page, and every fifth request adds a unit,
# cycling through the products, with a quarter of a second between requests, until killed. Each answer's status
# goes to codes-$1.
shopper_loop() {
    local jar="$LOAD_DIR/jar-$1" n=0 code product
    local products=(ceramic-mug tea-sampler espresso-beans hand-grinder paper-filters
        pour-over-kettle milk-frother digital-scale cold-brew-jar travel-tumbler)
    while :; do
        if ((n % 5 == 0)); then
            product=${products[$(((n / 5 + $1) % ${#products[@]}))]}
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -b "$jar" -c "$jar" \
                -H 'Content-Type: application/json' \
                -d "{\"product_id\":\"$product\",\"quantity\":1}" "$SHOP/api/cart/items") || code=000
        else
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -b "$jar" -c "$jar" \
                "$SHOP/cart") || code=000
        fi
        echo "$code" >>"$LOAD_DIR/codes-$1"
        n=$((n + 1))
        sleep 0.25
    done
}

start_shoppers() {
    local i
    for ((i = 1; i <= SHOPPERS; i++)); do
        shopper_loop "$i" </dev/null >/dev/null 2>&1 &
        SHOPPER_PIDS+=("$!")
    done
}

stop_shoppers() {
    ((${#SHOPPER_PIDS[@]})) || return 0
    local pid
    for pid in "${SHOPPER_PIDS[@]}"; do
        # The loop, and the curl or sleep it is waiting on.
        kill "$pid" 2>/dev/null || true
        pkill -P "$pid" 2>/dev/null || true
    done
    wait "${SHOPPER_PIDS[@]}" 2>/dev/null || true
    SHOPPER_PIDS=()
}

# How the background shoppers' requests were answered: "1432 requests: 1429 x 200, 3 x 503".
shoppers_summary() {
    cat "$LOAD_DIR"/codes-* 2>/dev/null | sort | uniq -c | sort -rn |
        awk '{total += $1; parts = parts (parts ? ", " : "") $1 " x " ($2 == "000" ? "no answer" : $2)}
             END {if (total) print total " requests: " parts; else print "no requests"}'
}

replica_names() {
    local id
    for id in $(compose ps -q app); do
        docker inspect -f '{{.Config.Hostname}}' "$id"
    done | sort | tr '\n' ' '
}

# Waits (up to $1 s) until every running replica has answered a request through nginx;
# prints how long that took.
wait_all_serve() {
    local limit=$1 start=$SECONDS want seen="" name
    want=$(replica_names)
    while ((SECONDS - start < limit)); do
        name=$(curl -s --max-time 2 -o /dev/null -D - "$SHOP/healthz" |
            grep -i '^x-served-by:' | awk '{print $2}' | tr -d '\r') || name=""
        [[ -n $name && " $seen " != *" $name "* ]] && seen="$seen $name"
        if [[ $(tr ' ' '\n' <<<"$seen" | sed '/^$/d' | sort | tr '\n' ' ') == "$want" ]]; then
            printf '   all of them answered through nginx within %d s\n' $((SECONDS - start))
            return 0
        fi
        sleep 0.1
    done
    printf '   not all replicas answered within %d s (seen:%s)\n' "$limit" "$seen"
}

[[ $(id -u) -eq 0 ]] || die "run as root (it may install packages and uses docker)"

narrate "Getting ready" "Compose v2, and the images (official ones, or stand-ins built from Debian packages)."
ensure_compose_v2
prepare_images
compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true

if [[ $DEMO_STORE == ha ]]; then
    fleet_is="Redis with two replicas and three sentinels, three identical app replicas, nginx round robin in front, no stickiness."
else
    fleet_is="One Redis, three identical replicas, nginx round robin in front, no stickiness."
fi
narrate "Starting the fleet" "$fleet_is"
show docker compose up -d "${COMPOSE_UP_ARGS[@]}" --wait ||
    die "the stack did not start"
wait_for_shop 60 || die "nginx does not answer at $SHOP"
printf '   replicas (container hostnames, which they report in X-Served-By): %s\n' "$(replica_names)"
if ((SHOPPERS > 0)); then
    start_shoppers
    printf '   %d background shoppers now browse and fill carts; watch them at %s/fleet\n' \
        "$SHOPPERS" "$SHOP"
fi
pause

narrate "Filling a cart through nginx" \
    "The session cookie is created on the first change; the cart itself lives in Redis."
add_item ceramic-mug 2
add_item tea-sampler 1
pause

narrate "Reading the cart 6 times" \
    "Round robin sends one session's requests to every replica, and each one shows the same cart."
read_cart 6
pause

victim=$(compose ps -q app | head -1)
victim_name=$(docker inspect -f '{{.Config.Hostname}}' "$victim")
narrate "Killing replica $victim_name (SIGKILL, no warning)" \
    "Nothing lived in it: the cart is intact and the other replicas serve it."
show docker kill "$victim_name"
read_cart 6
pause

narrate "Scaling out to 5 replicas" \
    "New replicas take traffic within seconds: nginx re-resolves 'app' in Docker's DNS, no reload.
   (compose also starts the killed replica again: it is one of the 5.)"
show docker compose up -d "${COMPOSE_UP_ARGS[@]}" --scale app=5 --no-recreate
printf '   replicas now: %s\n' "$(replica_names)"
wait_all_serve 15
read_cart 10
pause

narrate "Scaling back in to 2 replicas" \
    "Removed replicas drain before they stop, so the shopper notices nothing; the cart stays."
show docker compose up -d "${COMPOSE_UP_ARGS[@]}" --scale app=2 --no-recreate
printf '   replicas now: %s\n' "$(replica_names)"
sleep 3
read_cart 6
pause

# The container of the store's primary, as the sentinels name it (its service name at
# first, a promoted replica's address after a failover).
store_primary() {
    local host id
    host=$(compose exec -T sentinel redis-cli -p 26379 SENTINEL get-master-addr-by-name carts |
        head -1 | tr -d '\r')
    for id in $(compose ps -q redis redis-replica); do
        if [[ $(docker inspect -f '{{.Config.Hostname}}' "$id") == "$host" ]] ||
            docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$id" |
            grep -qw -- "$host"; then
            docker inspect -f '{{.Name}}' "$id" | tr -d /
            return 0
        fi
    done
    [[ $host == redis ]] && docker inspect -f '{{.Name}}' "$(compose ps -q redis)" | tr -d /
}

# Reads the cart every half second until it answers 200 (at most $1 s), showing each answer.
read_until_served() {
    local limit=$1 start=$SECONDS status
    while ((SECONDS - start < limit)); do
        status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -b "$COOKIES" "$SHOP/api/cart") || status=000
        printf '   %3d s  GET /api/cart -> %s\n' $((SECONDS - start)) "$status"
        [[ $status == 200 ]] && return 0
        sleep 0.5
    done
    return 1
}

if [[ $DEMO_STORE == ha ]]; then
    primary=$(store_primary) || die "the sentinels name no primary"
    narrate "Killing the Redis primary ($primary, SIGKILL)" \
        "The sentinels promote a replica within seconds; the replicas find it by themselves. Each
   change was confirmed by a replica before it was answered (REDIS_WAIT_REPLICAS=1): the cart survives."
    show docker kill "$primary"
    read_until_served 30 || printf '   the shop did not answer within 30 s\n'
    printf '   the primary now: %s\n' "$(store_primary || echo unknown)"
    read_cart 3
    add_item pour-over-kettle 1
    pause
    printf '\n%sThe cart survived a replica kill, a scale-out, a scale-in and the loss of the Redis primary.%s\n' \
        "$BOLD" "$RESET"
else
    printf '\n%sThe cart survived a kill, a scale-out and a scale-in: it lives in Redis, not in any replica.%s\n' \
        "$BOLD" "$RESET"
fi
if ((SHOPPERS > 0)); then
    stop_shoppers
    printf '   The %d background shoppers sent %s.\n' "$SHOPPERS" "$(shoppers_summary)"
fi
