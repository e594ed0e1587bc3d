#!/usr/bin/env bash
# Checks the Prometheus configuration of the compose profile `observability` with promtool
# (Debian package `prometheus`): the config file and the rule files it names are valid,
# and the alert and recording rules pass their unit tests (deploy/prometheus/rules.test.yml:
# each alert fires on the series it is about and stays silent on a healthy fleet).
#
#   scripts/prometheus-rules.sh
#
# `cargo xtask test e2e` runs it before scripts/compose-e2e.sh, which runs the same unit
# tests again with the promtool of the Prometheus image the stack runs: the two may be of
# different major versions (Debian bookworm's is 2.x, the image's 3.x).
set -euo pipefail

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../deploy/prometheus" && pwd)"
command -v promtool >/dev/null ||
    { echo "promtool is missing: apt-get install prometheus" >&2; exit 1; }
promtool --version 2>&1 | head -n 1
cd "$dir"
promtool check config prometheus.yml
promtool check rules rules.yml
promtool test rules rules.test.yml
