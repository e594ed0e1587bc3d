#!/usr/bin/env bash
# The benchmark in one command: builds elastic-cart with the bench profile (fat LTO, as the
# shipped `dist` build), runs every configuration of benches/fleet/main.rs on loopback and
# the cost curve, and writes target/bench/report.md, report.json and chart.png. Extra
# arguments go to the benchmark, for example:
#   scripts/bench.sh --users 64 --duration 10 --repeats 5
# Needs redis-server, redis-tools, nginx and fonts-dejavu-core (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --bench fleet -- "$@"
