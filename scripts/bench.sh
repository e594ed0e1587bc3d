#!/usr/bin/env bash
# The benchmark in one command: builds the release binary, runs the four configurations
# (memory-1, redis-1, sticky-1, fleet-3) and the fleet under changes only (changes-own,
# changes-shared) on loopback, and writes target/bench/report.md,
# report.json and chart.png. Extra arguments go to the benchmark, for example:
#   scripts/bench.sh --users 64 --duration 10 --repeats 5
# Needs redis-server, redis-tools, nginx and fonts-dejavu-core (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --bench fleet -- "$@"
