#!/usr/bin/env bash
# The sticky-versus-shared experiment in one command: the same shop load over three
# replicas on loopback (real nginx, redis-server and replicas of the release binary), run
# three ways: nginx sticky by its own cookie with sessions in memory (sticky), nginx
# ip_hash with sessions in memory (sticky_ip), and round robin with sessions in Redis
# (shared, the product). Each run: steady load, a replica killed and restarted, scale in
# 3 -> 2, scale out to 4. Writes target/sticky-vs-shared/report.json, report.md and
# chart.png; about four minutes. Extra arguments go to the experiment, for example:
#   scripts/sticky-vs-shared.sh --users 150 --seed 3 --only sticky,shared
# Needs redis-server, nginx and fonts-dejavu-core (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --bench sticky-vs-shared -- "$@"
