#!/usr/bin/env bash
# compare.sh measures sidecache against a peer (by default Debian's
# redis-server) with redis-benchmark on loopback, and prints Markdown tables
# of the medians and their ratios. See bench/README.md for how to read them.
#
# Algorithm: start each target on a free port, fill the same keyspace into
# every target (all KEYS keys, DATA-byte values), then for each round and
# each test (GET and SET, at each pipeline depth) run the targets one after
# the other, A then B, swapping the order every round (A B, B A, ...) so
# drift on the shared machine falls on both alike. Before a measured GET run
# every key is read once, unmeasured, so the run measures hits (for
# sidecache: L1 hits), and the INFO counters read around each run show
# the hit ratio the run really had.
#
# Environment (defaults in brackets):
#   ROUNDS [3]            rounds of A/B alternation
#   N_P1 [200000]         requests per run at -P 1
#   N_P16 [1000000]       requests per run at any deeper pipeline
#   N                     if set, requests per run for every pipeline depth
#   CLIENTS [50]          redis-benchmark -c
#   DATA [128]            value size, redis-benchmark -d
#   KEYS [100000]         keyspace, redis-benchmark -r
#   TESTS ["get set"]     redis-benchmark -t tests, measured in this order
#   PIPELINES ["1 16"]    redis-benchmark -P depths
#   PIN [0]               1: servers on CPU SERVER_CPUS [0], client on
#                         CPU CLIENT_CPUS [1] (taskset)
#   SIDECACHE_BIN         a built sidecache; empty: go build ./cmd/sidecache
#   SIDECACHE_ARGS [--l1-ttl 1h]  extra sidecache flags, split on spaces;
#                         the long TTL keeps every measured GET an L1 hit
#   REDIS_SERVER [redis-server]  the peer's binary
#   REDIS_ARGS            extra redis-server arguments, split on spaces
#   RUN_TIMEOUT [300]     seconds one client command (redis-benchmark, redis-cli --pipe) may take
#   OUT                   a directory to keep raw rows, tables and logs in
set -euo pipefail

: "${ROUNDS:=3}"
: "${N_P1:=200000}"
: "${N_P16:=1000000}"
: "${N:=}"
: "${CLIENTS:=50}"
: "${DATA:=128}"
: "${KEYS:=100000}"
: "${TESTS:=get set}"
: "${PIPELINES:=1 16}"
: "${PIN:=0}"
: "${SERVER_CPUS:=0}"
: "${CLIENT_CPUS:=1}"
: "${SIDECACHE_BIN:=}"
: "${SIDECACHE_ARGS=--l1-ttl 1h}"
: "${REDIS_SERVER:=redis-server}"
: "${REDIS_ARGS:=}"
: "${RUN_TIMEOUT:=300}"
: "${OUT:=}"

BENCH_NAME=compare # the prefix of progress lines, used by lib.sh
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# summarize RAW NAME_A NAME_B prints the Markdown tables of one pair.
summarize() {
	awk -F'\t' -v A="$2" -v B="$3" "$BENCH_AWK"'
	function add(k, f, v) { vals[k, f] = vals[k, f] (vals[k, f] == "" ? "" : " ") v }
	{
		# round order target test depth rps avg p50 p95 p99 max hit l1
		k = $4 SUBSEP $5
		if (!(k in seen)) { seen[k] = 1; keys[++nk] = k }
		t = ($3 == A) ? "A" : "B"
		add(k, t "rps", $6); add(k, t "p50", $8); add(k, t "p99", $10)
		add(k, t "hit", $12); add(k, t "l1", $13)
		rps[$1, k, t] = $6; p99[$1, k, t] = $10
		if ($1 > rounds) rounds = $1
		raw[++nr] = sprintf("| %s | %s | %s | %s | %s | %.0f | %.3f | %.3f | %.3f | %s | %s |", $1, $4, $5, $2, $3, $6, $8, $10, $11, $12, $13)
	}
	END {
		printf "| test | -P | %s rps | %s rps | rps ratio | per-round rps ratios | %s p50 ms | %s p50 ms | %s p99 ms | %s p99 ms | p99 ratio | hit%% %s / %s | L1 hit%% %s / %s |\n", A, B, A, B, A, B, A, B, A, B
		print "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
		for (i = 1; i <= nk; i++) {
			k = keys[i]; split(k, tp, SUBSEP)
			ar = median(vals[k, "Arps"]); br = median(vals[k, "Brps"])
			a99 = median(vals[k, "Ap99"]); b99 = median(vals[k, "Bp99"])
			per = ""
			for (r = 1; r <= rounds; r++)
				if ((r, k, "A") in rps && (r, k, "B") in rps)
					per = per (per == "" ? "" : " ") ratio(rps[r, k, "B"], rps[r, k, "A"])
			printf "| %s | %s | %.0f | %.0f | %s | %s | %.3f | %.3f | %.3f | %.3f | %s | %s / %s | %s / %s |\n",
				tp[1], tp[2], ar, br, ratio(br, ar), per, median(vals[k, "Ap50"]), median(vals[k, "Bp50"]),
				a99, b99, ratio(b99, a99), minimum(vals[k, "Ahit"]), minimum(vals[k, "Bhit"]),
				minimum(vals[k, "Al1"]), minimum(vals[k, "Bl1"])
			if (tp[1] == "GET" && tp[2] == 16)
				goal = sprintf("Goal for GET -P 16 (%s vs %s): rps ratio >= 1.00 and p99 ratio <= 1.50: rps ratio %s, p99 ratio %s: %s.",
					B, A, ratio(br, ar), ratio(b99, a99), (br >= ar && b99 <= 1.5 * a99) ? "met" : "NOT met")
		}
		print ""
		print "Medians over the rounds; ratios are " B "/" A "; hit% columns are the lowest over the rounds (GET only)."
		if (goal != "") { print ""; print goal }
		print ""
		print "Raw rows (order: position of the run within its round and test):"
		print ""
		print "| round | test | -P | order | target | rps | p50 ms | p99 ms | max ms | hit% | L1 hit% |"
		print "|---|---|---|---|---|---|---|---|---|---|---|"
		for (i = 1; i <= nr; i++) print raw[i]
	}' "$1"
}

# run_pair NAME_A PORT_A NAME_B PORT_B fills both targets, runs ROUNDS
# rounds of every test at every pipeline depth, A then B in odd rounds and
# B then A in even ones, and prints the tables (ratios are B/A).
run_pair() {
	local na=$1 pa=$2 nb=$3 pb=$4 round test depth
	RAW=$WORK/raw-$na-vs-$nb.tsv
	: >"$RAW"
	log "filling $KEYS keys of $DATA bytes into $na and $nb"
	pipe_all "$pa" SET
	pipe_all "$pb" SET
	for ((round = 1; round <= ROUNDS; round++)); do
		for test in $TESTS; do
			for depth in $PIPELINES; do
				if ((round % 2)); then
					measure "$round" 1 "$na" "$pa" "$test" "$depth"
					measure "$round" 2 "$nb" "$pb" "$test" "$depth"
				else
					measure "$round" 1 "$nb" "$pb" "$test" "$depth"
					measure "$round" 2 "$na" "$pa" "$test" "$depth"
				fi
			done
		done
	done
	{
		echo
		echo "### $nb vs $na"
		echo
		summarize "$RAW" "$na" "$nb"
	} | tee -a "$SUMMARY"
}

# header prints what was measured and where.
header() {
	echo "## sidecache bench/compare.sh, $(date -u +%Y-%m-%dT%H:%MZ)"
	echo
	describe_setup
	echo "- redis-benchmark -c $CLIENTS -d $DATA -r $KEYS, tests: $TESTS, -P: $PIPELINES, -n: ${N:-$N_P1 at -P 1, $N_P16 deeper}, rounds: $ROUNDS"
	echo "- sidecache flags: --listen 127.0.0.1:0 --log-format json${SIDECACHE_ARGS:+ $SIDECACHE_ARGS}"
}

main() {
	need_tools
	[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS=$ROUNDS: want a positive integer"
	local redis_port sidecache_port
	start_redis
	redis_port=$STARTED_PORT
	# shellcheck disable=SC2086 # SIDECACHE_ARGS is split on purpose
	start_sidecache $SIDECACHE_ARGS
	sidecache_port=$STARTED_PORT
	header | tee "$SUMMARY"
	run_pair redis "$redis_port" sidecache "$sidecache_port"
}

main "$@"
