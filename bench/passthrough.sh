#!/usr/bin/env bash
# passthrough.sh measures sidecache's pass-through path against twemproxy
# (nutcracker), both in front of the same redis-server, and Redis directly
# as the baseline, with redis-benchmark on loopback. It prints Markdown
# tables of the medians, sidecache/twemproxy ratios and the p50 each proxy
# adds over direct Redis. See bench/README.md for how to read them.
#
# Algorithm: start one redis-server, then twemproxy (one pool, one server:
# that redis-server) and sidecache (--l2 redis://that redis-server, L1 off
# with --l1-max-bytes 0, so every command goes to Redis), each on a free
# port. Fill all KEYS keys with DATA-byte values into the redis-server once
# (so no GET misses; the proxies see the same data). Then for each round
# and each test (GET and SET, at each pipeline depth) run every target one
# after the other, rotating the order each round (redis twemproxy sidecache,
# then twemproxy sidecache redis, ...) so drift on the shared machine falls
# on all alike. Around each run the script reads the redis-server's INFO
# commandstats and keyspace counters, to show that every command of a run
# through a proxy really reached Redis (and hit).
#
# Environment (defaults in brackets):
#   ROUNDS [3]            rounds of rotation
#   N_P1 [150000]         requests per run at -P 1
#   N_P16 [1000000]       requests per run at any deeper pipeline
#   N                     if set, requests per run for every pipeline depth
#   CLIENTS [50]          redis-benchmark -c
#   DATA [128]            value size, redis-benchmark -d
#   KEYS [100000]         keyspace, redis-benchmark -r
#   TESTS ["get set"]     redis-benchmark -t tests, measured in this order
#   PIPELINES ["1 16"]    redis-benchmark -P depths
#   TARGETS ["redis twemproxy sidecache"]  the targets measured (a subset
#                         leaves the others' columns empty)
#   GOAL_RPS [1.5]        the sidecache/twemproxy rps ratio wanted at -P 16
#   PIN [0]               1: servers on CPU SERVER_CPUS [0], client on
#                         CPU CLIENT_CPUS [1] (taskset)
#   SIDECACHE_BIN         a built sidecache; empty: go build ./cmd/sidecache
#   SIDECACHE_ARGS [--l1-max-bytes 0]  sidecache flags besides --listen,
#                         --log-format and --l2, split on spaces
#   NUTCRACKER [nutcracker]  the twemproxy binary (apt-get installs Debian's
#                         nutcracker when it is missing)
#   TW_CONNECTIONS [1]    twemproxy's server_connections to the redis-server
#   TW_MBUF [16384]       twemproxy's mbuf size in bytes (nutcracker -m)
#   REDIS_SERVER [redis-server]  the redis-server binary
#   REDIS_ARGS            extra redis-server arguments, split on spaces
#   RUN_TIMEOUT [300]     seconds one client command may take
#   OUT                   a directory to keep raw rows, tables, configs and logs in
set -euo pipefail

: "${ROUNDS:=3}"
: "${N_P1:=150000}"
: "${N_P16:=1000000}"
: "${N:=}"
: "${CLIENTS:=50}"
: "${DATA:=128}"
: "${KEYS:=100000}"
: "${TESTS:=get set}"
: "${PIPELINES:=1 16}"
: "${TARGETS:=redis twemproxy sidecache}"
: "${GOAL_RPS:=1.5}"
: "${PIN:=0}"
: "${SERVER_CPUS:=0}"
: "${CLIENT_CPUS:=1}"
: "${SIDECACHE_BIN:=}"
: "${SIDECACHE_ARGS=--l1-max-bytes 0}"
: "${NUTCRACKER:=nutcracker}"
: "${TW_CONNECTIONS:=1}"
: "${TW_MBUF:=16384}"
: "${REDIS_SERVER:=redis-server}"
: "${REDIS_ARGS:=}"
: "${RUN_TIMEOUT:=300}"
: "${OUT:=}"

BENCH_NAME=passthrough # the prefix of progress lines, used by lib.sh
READ_PASS=0            # no L1 to fill: every GET goes to Redis anyway
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REACHED=$WORK/reached.tsv # round target test depth reached-redis%
: >"$REACHED"

# need_nutcracker installs Debian's nutcracker if NUTCRACKER is missing.
need_nutcracker() {
	if ! command -v "$NUTCRACKER" >/dev/null && [[ $NUTCRACKER == nutcracker ]]; then
		log "installing nutcracker"
		apt_install nutcracker
	fi
	command -v "$NUTCRACKER" >/dev/null || die "$NUTCRACKER not found"
}

# launch_twemproxy PORT LOGFILE REDIS_PORT starts nutcracker in the
# background with one pool in front of the redis-server on REDIS_PORT,
# serving its stats on another free port (TW_STATS).
launch_twemproxy() {
	local port=$1 logf=$2 redis_port=$3 conf
	TW_STATS=$(pick_port)
	[[ $TW_STATS != "$port" ]] || return 1
	conf=$WORK/nutcracker-$port.yml
	cat >"$conf" <<-EOF
		sidecache_bench:
		  listen: 127.0.0.1:$port
		  redis: true
		  hash: fnv1a_64
		  distribution: ketama
		  server_connections: $TW_CONNECTIONS
		  preconnect: true
		  auto_eject_hosts: false
		  servers:
		    - 127.0.0.1:$redis_port:1
	EOF
	"$NUTCRACKER" --test-conf -c "$conf" >"$logf" 2>&1 || die "nutcracker rejects $conf: $(cat "$logf")"
	"${SERVER_PREFIX[@]}" "$NUTCRACKER" -c "$conf" -s "$TW_STATS" -a 127.0.0.1 \
		-m "$TW_MBUF" -o "$logf" &
}

# start_twemproxy REDIS_PORT starts nutcracker in the foreground with one
# pool in front of the redis-server on REDIS_PORT, listening and serving
# its stats on free loopback ports, and sets STARTED_PORT.
start_twemproxy() {
	start_on_free_port nutcracker launch_twemproxy "$1"
	log "nutcracker pid $STARTED_PID on 127.0.0.1:$STARTED_PORT (stats $TW_STATS), server_connections $TW_CONNECTIONS, mbuf $TW_MBUF"
}

# start_passthrough REDIS_PORT starts sidecache with the redis-server on
# REDIS_PORT as its remote L2 and sets STARTED_PORT.
start_passthrough() {
	local help
	build_sidecache
	help=$("$SIDECACHE_BIN" --help 2>&1 || true)
	[[ $help == *"--l2 "* ]] || die "$SIDECACHE_BIN has no --l2 flag (the remote L2): build a newer tree"
	# shellcheck disable=SC2086 # SIDECACHE_ARGS is split on purpose
	start_sidecache --l2 "redis://127.0.0.1:$1/0" $SIDECACHE_ARGS
}

# calls PORT TEST prints how many times the redis-server on PORT ran the
# command TEST (INFO commandstats), 0 if never.
calls() {
	local v
	v=$(redis-cli -h 127.0.0.1 -p "$1" info commandstats 2>/dev/null | tr -d '\r' |
		awk -F'[:=,]' -v c="cmdstat_$2" '$1 == c && $2 == "calls" { print $3 }')
	echo "${v:-0}"
}

# measure_target ROUND ORDER NAME PORT TEST DEPTH REDIS_PORT runs measure
# with the keyspace counters of the redis-server on REDIS_PORT (and
# sidecache's L1 counters for sidecache), and records in $REACHED which
# share of the run's requests reached that redis-server.
measure_target() {
	local round=$1 order=$2 name=$3 port=$4 test=$5 depth=$6 redis_port=$7 l1_port=- c0 c1
	[[ $name == sidecache ]] && l1_port=$port
	c0=$(calls "$redis_port" "$test")
	measure "$round" "$order" "$name" "$port" "$test" "$depth" "$redis_port" "$l1_port"
	c1=$(calls "$redis_port" "$test")
	printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "${test^^}" "$depth" \
		"$(awk -v d=$((c1 - c0)) -v n="$(requests "$depth")" 'BEGIN { printf "%.2f", 100 * d / n }')" >>"$REACHED"
}

# summarize REACHED RAW prints the tables: throughput, latency, checks, the
# goal, and the raw rows.
summarize() {
	awk -F'\t' -v TARGETS="$TARGETS" -v GOAL="$GOAL_RPS" "$BENCH_AWK"'
	function add(k, f, v) { vals[k, f] = vals[k, f] (vals[k, f] == "" ? "" : " ") v }
	function med(k, f) { return ((k, f) in vals) ? median(vals[k, f]) : "" }
	function num(v, f) { return v == "" ? "-" : sprintf(f, v) }
	function diff(a, b) { return (a == "" || b == "") ? "" : a - b }
	function rat(b, a) { return (a == "" || b == "") ? "-" : ratio(b, a) }
	function lowest(k, f) { return ((k, f) in vals) ? minimum(vals[k, f]) : "-" }
	FILENAME == ARGV[1] { reached[$1, $2, $3, $4] = $5; next }
	{
		# round order target test depth rps avg p50 p95 p99 max hit l1
		k = $4 SUBSEP $5
		if (!(k in seen)) { seen[k] = 1; keys[++nk] = k }
		add(k, $3 " rps", $6); add(k, $3 " p50", $8); add(k, $3 " p99", $10)
		add(k, $3 " hit", $12); add(k, $3 " l1", $13)
		r = (($1, $3, $4, $5) in reached) ? reached[$1, $3, $4, $5] : "-"
		add(k, $3 " reached", r)
		rps[$1, k, $3] = $6
		if ($1 > rounds) rounds = $1
		raw[++nr] = sprintf("| %s | %s | %s | %s | %s | %.0f | %.3f | %.3f | %.3f | %s | %s | %s |", $1, $4, $5, $2, $3, $6, $8, $10, $11, r, $12, $13)
	}
	END {
		nt = split(TARGETS, t, " ")
		# Throughput.
		h = "| test | -P |"; s = "|---|---|"
		for (i = 1; i <= nt; i++) { h = h " " t[i] " rps |"; s = s "---|" }
		print h " sidecache/twemproxy | per-round sidecache/twemproxy | twemproxy/redis | sidecache/redis |"
		print s "---|---|---|---|"
		for (j = 1; j <= nk; j++) {
			k = keys[j]; split(k, tp, SUBSEP)
			line = "| " tp[1] " | " tp[2] " |"
			for (i = 1; i <= nt; i++) line = line " " num(med(k, t[i] " rps"), "%.0f") " |"
			sr = med(k, "sidecache rps"); tr = med(k, "twemproxy rps"); rr = med(k, "redis rps")
			per = ""
			for (r = 1; r <= rounds; r++)
				if ((r, k, "sidecache") in rps && (r, k, "twemproxy") in rps)
					per = per (per == "" ? "" : " ") ratio(rps[r, k, "sidecache"], rps[r, k, "twemproxy"])
			print line " " rat(sr, tr) " | " (per == "" ? "-" : per) " | " rat(tr, rr) " | " rat(sr, rr) " |"
			if (tp[2] == 16 && sr != "" && tr != "") {
				goal[++ng] = sprintf("%s -P 16: sidecache/twemproxy rps %s >= %s: %s", tp[1], ratio(sr, tr), GOAL, (sr >= GOAL * tr) ? "met" : "NOT met")
				fails += (sr >= GOAL * tr) ? 0 : 1
			}
		}
		print ""
		print "Medians over the rounds; per-round ratios are of runs of the same round."
		# Latency.
		print ""
		h = "| test | -P |"; s = "|---|---|"
		for (i = 1; i <= nt; i++) { h = h " " t[i] " p50 ms |"; s = s "---|" }
		h = h " twemproxy added p50 ms | sidecache added p50 ms |"; s = s "---|---|"
		for (i = 1; i <= nt; i++) { h = h " " t[i] " p99 ms |"; s = s "---|" }
		print h; print s
		for (j = 1; j <= nk; j++) {
			k = keys[j]; split(k, tp, SUBSEP)
			line = "| " tp[1] " | " tp[2] " |"
			for (i = 1; i <= nt; i++) line = line " " num(med(k, t[i] " p50"), "%.3f") " |"
			ta = diff(med(k, "twemproxy p50"), med(k, "redis p50"))
			sa = diff(med(k, "sidecache p50"), med(k, "redis p50"))
			line = line " " num(ta, "%+.3f") " | " num(sa, "%+.3f") " |"
			for (i = 1; i <= nt; i++) line = line " " num(med(k, t[i] " p99"), "%.3f") " |"
			print line
			if (tp[2] == 1 && ta != "" && sa != "") {
				goal[++ng] = sprintf("%s -P 1: sidecache added p50 %+.3f ms <= twemproxy added p50 %+.3f ms: %s", tp[1], sa, ta, (sa <= ta) ? "met" : "NOT met")
				fails += (sa <= ta) ? 0 : 1
			}
		}
		print ""
		print "Added p50: median p50 of the proxy minus median p50 of Redis direct."
		# Checks.
		print ""
		h = "| test | -P |"; s = "|---|---|"
		for (i = 1; i <= nt; i++) { h = h " " t[i] " at redis % |"; s = s "---|" }
		for (i = 1; i <= nt; i++) { h = h " " t[i] " hit% |"; s = s "---|" }
		print h " sidecache L1 hit% |"; print s "---|"
		for (j = 1; j <= nk; j++) {
			k = keys[j]; split(k, tp, SUBSEP)
			line = "| " tp[1] " | " tp[2] " |"
			for (i = 1; i <= nt; i++) line = line " " lowest(k, t[i] " reached") " |"
			for (i = 1; i <= nt; i++) line = line " " lowest(k, t[i] " hit") " |"
			print line " " lowest(k, "sidecache l1") " |"
		}
		print ""
		print "Lowest over the rounds. at redis %: commands of that name the redis-server ran during the run (INFO commandstats),"
		print "per request sent; 100 means every request went through to Redis. hit%: the redis-server'"'"'s keyspace hit ratio"
		print "during a GET run; L1 hit%: sidecache'"'"'s own (- when it counted no lookups: L1 off)."
		# Every request through a proxy must have reached Redis, and every GET
		# hit there, or the runs did not measure the pass-through path.
		bad = ""
		for (j = 1; j <= nk; j++) {
			k = keys[j]; split(k, tp, SUBSEP)
			for (i = 1; i <= nt; i++) {
				v = lowest(k, t[i] " reached")
				if (v == "-" || v + 0 < 100) bad = bad sprintf(", %s %s -P %s at redis %s%%", t[i], tp[1], tp[2], v)
				v = lowest(k, t[i] " hit")
				if (tp[1] == "GET" && (v == "-" || v + 0 < 100)) bad = bad sprintf(", %s %s -P %s hit %s%%", t[i], tp[1], tp[2], v)
			}
		}
		print ""
		if (bad == "") print "Pass-through check: every request of every run reached Redis, and every GET hit: yes."
		else print "Pass-through check: NO" bad "."
		print ""
		if (ng == 0) print "Goal: not evaluated (needs twemproxy and sidecache at -P 1 and -P 16)."
		else {
			print "Goal (sidecache rps >= " GOAL "x twemproxy at -P 16, added p50 <= twemproxy'"'"'s at -P 1): " (bad != "" ? "not valid (pass-through check failed)" : fails ? "NOT met" : "met") "."
			print ""
			for (i = 1; i <= ng; i++) print "- " goal[i]
		}
		print ""
		print "Raw rows (order: position of the run within its round and test):"
		print ""
		print "| round | test | -P | order | target | rps | p50 ms | p99 ms | max ms | at redis % | hit% | L1 hit% |"
		print "|---|---|---|---|---|---|---|---|---|---|---|---|"
		for (i = 1; i <= nr; i++) print raw[i]
	}' "$1" "$2"
}

# header prints what was measured and where.
header() {
	echo "## sidecache bench/passthrough.sh, $(date -u +%Y-%m-%dT%H:%MZ)"
	echo
	describe_setup
	echo "- redis-benchmark -c $CLIENTS -d $DATA -r $KEYS, tests: $TESTS, -P: $PIPELINES, -n: ${N:-$N_P1 at -P 1, $N_P16 deeper}, rounds: $ROUNDS, targets: $TARGETS"
	if [[ " $TARGETS " == *" twemproxy "* ]]; then
		echo "- twemproxy: $("$NUTCRACKER" --version 2>&1 | awk '/nutcracker-/ { print $NF; exit }'), server_connections: $TW_CONNECTIONS, mbuf: $TW_MBUF bytes, hash fnv1a_64, distribution ketama, preconnect"
	fi
	if [[ " $TARGETS " == *" sidecache "* ]]; then
		echo "- sidecache flags: --listen 127.0.0.1:0 --log-format json --l2 redis://127.0.0.1:<redis>/0${SIDECACHE_ARGS:+ $SIDECACHE_ARGS}"
	fi
}

main() {
	[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS=$ROUNDS: want a positive integer"
	local -a names=() ports=()
	local t redis_port round test depth i j
	for t in $TARGETS; do
		case $t in
		redis | twemproxy | sidecache) names+=("$t") ;;
		*) die "TARGETS: unknown target $t (want redis, twemproxy, sidecache)" ;;
		esac
	done
	((${#names[@]} > 0)) || die "TARGETS is empty"
	need_tools
	[[ " $TARGETS " != *" twemproxy "* ]] || need_nutcracker
	start_redis
	redis_port=$STARTED_PORT
	for t in "${names[@]}"; do
		case $t in
		redis) ports+=("$redis_port") ;;
		twemproxy)
			start_twemproxy "$redis_port"
			ports+=("$STARTED_PORT")
			;;
		sidecache)
			start_passthrough "$redis_port"
			ports+=("$STARTED_PORT")
			;;
		esac
	done
	header | tee "$SUMMARY"
	RAW=$WORK/raw-passthrough.tsv
	: >"$RAW"
	log "filling $KEYS keys of $DATA bytes into redis"
	pipe_all "$redis_port" SET
	for ((round = 1; round <= ROUNDS; round++)); do
		for test in $TESTS; do
			for depth in $PIPELINES; do
				for ((j = 0; j < ${#names[@]}; j++)); do
					i=$(((round - 1 + j) % ${#names[@]}))
					measure_target "$round" $((j + 1)) "${names[i]}" "${ports[i]}" "$test" "$depth" "$redis_port"
				done
			done
		done
	done
	{
		echo
		echo "### pass-through: redis direct, twemproxy and sidecache in front of it"
		echo
		summarize "$REACHED" "$RAW"
	} | tee -a "$SUMMARY"
}

main "$@"
