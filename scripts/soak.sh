#!/usr/bin/env bash
# The fault soak: shop load through nginx over three replicas on loopback while faults
# come in a seeded random order (replica SIGKILL/SIGTERM and restart, scale out and in,
# the crash button, Redis SIGSTOP/SIGCONT, Redis restarted on its append-only file,
# CLIENT KILL, CLIENT PAUSE, and latency, stalls, loss and cuts between the replicas and
# Redis through a TCP fault proxy). Shoppers resend a change with the same
# Idempotency-Key until it is answered; a ledger of every acknowledged change is checked
# against every answer, every read and, at the end, every cart. See testkit/src/loads/soak.rs.
# With --store sentinel (a primary, two replicas, three sentinels) or --store cluster
# (three primaries, three replicas) the store's faults are those of a failover instead:
# the primary SIGKILLed and back as a replica, and SCRIPT FLUSH on every cluster node;
# --faults redis_failover adds SENTINEL FAILOVER, which can lose changes (docs/configuration.md, Failover).
#
#   scripts/soak.sh --minutes 10 [--seed 1] [--shoppers 12] [--replicas 3]
#                   [--store redis|sentinel|cluster] [--wait-replicas 0]
#                   [--faults kind,kind...] [--report target/soak/report.json]
#
# Needs redis-server, redis-tools and nginx (Debian packages). Exit 0 only if nothing was
# lost, nothing was applied twice, every answer agreed with the ledger and no 500 came.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet --bin elastic-cart
exec cargo run --release --quiet -p testkit --bin soak -- \
    --binary target/release/elastic-cart "$@"
