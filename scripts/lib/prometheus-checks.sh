# shellcheck shell=bash
# Checks of the compose profile `observability` against a running stack, through
# Prometheus's HTTP API on loopback. Sourced by scripts/compose-e2e.sh after
# scripts/lib/standin-images.sh (it uses its `compose`, `log` and `die`); needs curl and jq.
#
#   wait_for_prometheus SECONDS      Prometheus answers /-/ready
#   check_prometheus_rules_in_image  promtool of the running image: config, rules, unit tests
#   check_prometheus_targets SECONDS every running app replica is an up==1 target, and no
#                                    other (polled: DNS is looked up again every 5 s)
#   check_prometheus_metadata        the metadata API knows every family of docs/operations.md
#                                    "## Metrics" with its type and a help text
#   check_prometheus_fleet_rate SECONDS  the recording rule elastic_cart:http_requests:rate1m
#                                    has a value, above 0

PROMETHEUS_URL="http://127.0.0.1:${PROMETHEUS_PORT:-9090}"

# GET of a Prometheus API path; prints the JSON body; fails on a non-2xx answer.
prometheus_api() {
    curl -fsS --max-time 5 "$PROMETHEUS_URL$1" "${@:2}"
}

# An instant query's result vector, as JSON (`[]` if none).
prometheus_query() {
    prometheus_api /api/v1/query --get --data-urlencode "query=$1" | jq -c '.data.result'
}

wait_for_prometheus() {
    local deadline=$((SECONDS + ${1:-60}))
    until curl -fsS -o /dev/null --max-time 2 "$PROMETHEUS_URL/-/ready" 2>/dev/null; do
        ((SECONDS < deadline)) || die "Prometheus is not ready at $PROMETHEUS_URL"
        sleep 0.5
    done
}

# The same checks as scripts/prometheus-rules.sh, with the promtool of the image the stack
# runs (the official one's or the stand-in's), which may be a newer major version than the
# host's.
check_prometheus_rules_in_image() {
    local version
    version=$(compose exec -T prometheus promtool --version 2>&1 | sed -n 1p)
    log "promtool in the Prometheus container ($version): check config, test rules"
    compose exec -T -w /etc/prometheus prometheus promtool check config prometheus.yml \
        >/dev/null || die "promtool check config failed in the Prometheus container"
    compose exec -T -w /etc/prometheus prometheus promtool test rules rules.test.yml ||
        die "promtool test rules failed in the Prometheus container"
}

# Addresses (ip:3000) of the running app containers, sorted, one a line.
running_app_addresses() {
    local ids
    ids=$(compose ps -q app)
    [[ -n $ids ]] || return 0
    # shellcheck disable=SC2086 # one argument per id
    docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}:3000 {{end}}' $ids |
        tr ' ' '\n' | sed '/^$/d' | sort
}

# Instances of the job's targets whose last scrape succeeded, sorted, one a line.
up_targets() {
    prometheus_query 'up{job="elastic-cart"} == 1' | jq -r '.[].metric.instance' | sort
}

check_prometheus_targets() {
    local deadline=$((SECONDS + ${1:-30})) running up
    while :; do
        # A replica removed between two lookups, or a slow answer, is retried, not fatal.
        running=$(running_app_addresses) || true
        up=$(up_targets) || true
        [[ -n $running && $running == "$up" ]] && break
        if ((SECONDS >= deadline)); then
            log "running app replicas: $(tr '\n' ' ' <<<"$running")"
            log "Prometheus targets up: $(tr '\n' ' ' <<<"$up")"
            prometheus_api /api/v1/targets | jq -c '.data.activeTargets[] |
                {instance: .labels.instance, health, lastError}' >&2 || true
            die "Prometheus's up==1 targets are not the running app replicas"
        fi
        sleep 1
    done
    log "Prometheus scrapes every running replica: $(tr '\n' ' ' <<<"$up")"
}

# (family type) of each row of docs/operations.md's "## Metrics" table, with a counter's
# `_total` taken off: Prometheus names a family that way in its metadata (OpenMetrics).
documented_families() {
    # shellcheck disable=SC2016 # the backticks are the table's, not a command
    sed -n '/^## Metrics$/,/^## /p' "$REPO_ROOT/docs/operations.md" |
        sed -nE 's/^\| `(elastic_cart_[a-z0-9_]+)` \| ([a-z]+) \|.*/\1 \2/p' |
        sed -E 's/_total counter$/ counter/'
}

check_prometheus_metadata() {
    local metadata family type got missing=() count=0
    metadata=$(prometheus_api /api/v1/metadata) || die "no answer from /api/v1/metadata"
    while read -r family type; do
        count=$((count + 1))
        got=$(jq -r --arg f "$family" \
            '.data[$f] // [] | map("\(.type) \(.help | length)") | first // "absent"' \
            <<<"$metadata")
        if [[ $got == absent ]]; then
            missing+=("$family (absent)")
        elif [[ ${got% *} != "$type" || ${got#* } == 0 ]]; then
            missing+=("$family (type/help length: $got, want $type)")
        fi
    done < <(documented_families)
    ((count >= 9)) || die "read only $count families from docs/operations.md"
    ((${#missing[@]} == 0)) ||
        die "Prometheus's metadata lacks documented families: ${missing[*]}"
    log "Prometheus's metadata has all $count documented families, with their types and help"
}

check_prometheus_fleet_rate() {
    local deadline=$((SECONDS + ${1:-30})) result
    while :; do
        result=$(prometheus_query 'elastic_cart:http_requests:rate1m{job="elastic-cart"} > 0')
        [[ $result != "[]" ]] && break
        ((SECONDS < deadline)) ||
            die "elastic_cart:http_requests:rate1m has no value above 0"
        sleep 1
    done
    log "fleet-wide request rate (recording rule): $(jq -r '.[0].value[1]' <<<"$result")/s"
}
