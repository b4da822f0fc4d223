#!/usr/bin/env bash
# outage.sh runs the L2 outage scenario of bench/outage: steady GET load
# through sidecache with a redis-server as its L2, the redis-server killed
# (SIGKILL) part-way through and restarted empty on the same port, and one
# Markdown row per second (throughput, errors, stale answers, origin
# fallbacks, shed reads, p99 latency, breaker state), then the goals: p99
# of hot-key reads served from L1 during the outage under 1 ms, no error
# on a hot key. See bench/README.md for how to read it.
#
# Algorithm: install redis-server if it is missing, build sidecache and the
# load generator (go build ./bench/outage), and run the latter, which owns
# the scenario: it starts the redis-server, sidecache and (read-through
# mode) an HTTP origin on free loopback ports, and stops them when it ends.
#
# Usage: ./bench/outage.sh [flag...]   (or: make bench-outage)
# The flags are the load generator's (go run ./bench/outage -help), e.g.
#   ./bench/outage.sh -mode read-through
#   ./bench/outage.sh -rate 0 -conns 32 -duration 40s -kill-at 10s -restore-at 25s
#
# Environment (defaults in brackets):
#   SIDECACHE_BIN         a built sidecache; empty: go build ./cmd/sidecache
#   REDIS_SERVER [redis-server]  the L2's binary
#   RUN_TIMEOUT [600]     seconds the whole scenario may take
#   OUT                   a directory to keep the tables (summary.md) and the
#                         logs of sidecache and of each redis-server run in
set -euo pipefail

: "${SIDECACHE_BIN:=}"
: "${REDIS_SERVER:=redis-server}"
: "${RUN_TIMEOUT:=600}"
: "${OUT:=}"
PIN=0 # lib.sh's need_tools reads it; the scenario does not pin

BENCH_NAME=outage # the prefix of progress lines, used by lib.sh
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

main() {
	local rc=0
	need_tools
	build_sidecache
	log "building the load generator"
	(cd "$ROOT" && go build -o "$WORK/outage" ./bench/outage) || die "go build ./bench/outage failed"
	# In the background and waited for, so that INT and TERM reach the
	# traps at once; lib.sh's cleanup sends TERM to CHILD, and the load
	# generator then stops the processes it started. The tables are
	# printed when the load ends (progress goes to stderr meanwhile).
	timeout "$RUN_TIMEOUT" "$WORK/outage" -sidecache-bin "$SIDECACHE_BIN" \
		-redis-server "$REDIS_SERVER" -workdir "$WORK" "$@" >"$SUMMARY" &
	CHILD=$!
	wait "$CHILD" || rc=$?
	CHILD=
	cat "$SUMMARY"
	((rc == 0)) || die "the scenario failed (exit status $rc)"
}

main "$@"
