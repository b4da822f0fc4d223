# shellcheck shell=bash
# lib.sh holds what the bench scripts share: the work directory and the
# cleanup trap, bounded client runs, free ports, starting redis-server and
# sidecache, filling the keyspace, INFO counters, one redis-benchmark run
# as a raw row, and the awk helpers of the summaries. It is sourced, not
# run, by compare.sh and passthrough.sh after they set their defaults.
#
# The sourcing script sets, before sourcing:
#   BENCH_NAME            the prefix of progress lines on stderr
#   ROUNDS N_P1 N_P16 N CLIENTS DATA KEYS PIN SERVER_CPUS CLIENT_CPUS
#   SIDECACHE_BIN REDIS_SERVER REDIS_ARGS RUN_TIMEOUT OUT
#                         as documented in the scripts' headers
# and may set:
#   READ_PASS [1]         1: before each measured GET run, read every key
#                         once, unmeasured (fills sidecache's L1)
#
# Sourcing sets ROOT (the repository), WORK (a temporary directory removed
# on exit), SUMMARY, PIDS and the EXIT, INT and TERM traps; every server
# started with start_redis, start_sidecache or added to PIDS is stopped on
# exit, and the logs, raw rows (*.tsv), configs (*.yml) and summary are
# copied to OUT when it is set.

: "${READ_PASS:=1}"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sidecache-bench.XXXXXX")
PIDS=()          # every server this script started, killed on exit
CHILD=           # the client command run_bg is waiting for
SUMMARY=$WORK/summary.md
STARTED_PORT=    # set by start_redis and start_sidecache
SERVER_PREFIX=() # taskset prefix for servers (PIN=1)
CLIENT_PREFIX=() # taskset prefix for redis-benchmark and redis-cli

log() { printf '%s: %s\n' "$BENCH_NAME" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

cleanup() {
	local pid i
	if [[ -n $CHILD ]]; then
		kill -TERM "$CHILD" 2>/dev/null || true
		wait "$CHILD" 2>/dev/null || true
	fi
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		for ((i = 0; i < 50; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [[ -n $OUT ]]; then
		mkdir -p "$OUT"
		cp "$WORK"/*.log "$WORK"/*.tsv "$WORK"/*.yml "$SUMMARY" "$OUT"/ 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run_bg INFILE OUTFILE COMMAND... runs a client command reading INFILE,
# with its output in OUTFILE, bounded by RUN_TIMEOUT. It runs in the
# background and is waited for, so that INT and TERM reach the traps at
# once, not when the command ends.
run_bg() {
	local inf=$1 outf=$2 rc=0
	shift 2
	timeout "$RUN_TIMEOUT" "${CLIENT_PREFIX[@]}" "$@" <"$inf" >"$outf" 2>&1 &
	CHILD=$!
	wait "$CHILD" || rc=$?
	CHILD=
	return "$rc"
}

# need_tools checks for the programs the script runs and installs Debian's
# redis-server and redis-tools if they are missing (as `make deps` does).
need_tools() {
	if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null ||
		! command -v redis-benchmark >/dev/null; then
		log "installing redis-server and redis-tools"
		apt_install redis-server redis-tools
	fi
	local t
	for t in "$REDIS_SERVER" redis-cli redis-benchmark timeout awk; do
		command -v "$t" >/dev/null || die "$t not found"
	done
	if [[ -z $SIDECACHE_BIN ]]; then
		command -v go >/dev/null || die "go not found (or set SIDECACHE_BIN)"
	fi
	if [[ $PIN == 1 ]]; then
		command -v taskset >/dev/null || die "PIN=1 needs taskset (util-linux)"
		SERVER_PREFIX=(taskset -c "$SERVER_CPUS")
		CLIENT_PREFIX=(taskset -c "$CLIENT_CPUS")
	fi
}

# apt_install PACKAGE... installs Debian packages, with sudo unless root.
apt_install() {
	local sudo=
	[[ $(id -u) -eq 0 ]] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# pick_port prints a loopback port nothing listens on. Ports come from
# below Linux's ephemeral range; a port taken between this check and the
# server's bind makes the server fail, and its start_ function tries
# another.
pick_port() {
	local p i
	for ((i = 0; i < 100; i++)); do
		p=$((10000 + (RANDOM * 32768 + RANDOM) % 22000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found"
}

# wait_ready PID PORT polls PING until PONG, for at most 10 s; it fails
# early if the process exits.
wait_ready() {
	local pid=$1 port=$2 i
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || return 1
		if [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]]; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# start_on_free_port NAME LAUNCH [ARG...] starts a server on a free
# loopback port, trying up to five ports in case one is taken meanwhile:
# LAUNCH PORT LOGFILE [ARG...] must start it in the background (or return
# non-zero to try another port). Sets STARTED_PORT and STARTED_PID.
start_on_free_port() {
	local name=$1 launch=$2 attempt port pid logf
	shift 2
	for ((attempt = 1; attempt <= 5; attempt++)); do
		port=$(pick_port)
		logf=$WORK/$name-$port.log
		"$launch" "$port" "$logf" "$@" || continue
		pid=$!
		PIDS+=("$pid")
		if wait_ready "$pid" "$port"; then
			STARTED_PORT=$port
			STARTED_PID=$pid
			return 0
		fi
		if kill -0 "$pid" 2>/dev/null; then
			die "$name on port $port did not answer PING in 10 s: $(tail -n 5 "$logf" 2>/dev/null)"
		fi
		log "$name could not start on port $port, trying another: $(tail -n 1 "$logf" 2>/dev/null)"
	done
	die "$name did not start"
}

# launch_redis PORT LOGFILE starts a redis-server without persistence.
launch_redis() {
	# shellcheck disable=SC2086 # REDIS_ARGS is split on purpose
	"${SERVER_PREFIX[@]}" "$REDIS_SERVER" --bind 127.0.0.1 --port "$1" \
		--save '' --appendonly no --daemonize no --dir "$WORK" \
		--logfile "$2" $REDIS_ARGS &
}

# start_redis starts a redis-server without persistence on a free loopback
# port and sets STARTED_PORT.
start_redis() {
	start_on_free_port redis-server launch_redis
	log "redis-server pid $STARTED_PID on 127.0.0.1:$STARTED_PORT"
}

# build_sidecache builds the binary once, unless SIDECACHE_BIN names one.
build_sidecache() {
	if [[ -n $SIDECACHE_BIN ]]; then
		[[ -x $SIDECACHE_BIN ]] || die "SIDECACHE_BIN=$SIDECACHE_BIN is not executable"
		return 0
	fi
	log "building sidecache"
	(cd "$ROOT" && go build -o "$WORK/sidecache" ./cmd/sidecache) || die "go build ./cmd/sidecache failed"
	SIDECACHE_BIN=$WORK/sidecache
}

# start_sidecache [FLAG...] starts sidecache on 127.0.0.1:0 with the given
# extra flags, reads the port it bound from its "listening" log line, and
# sets STARTED_PORT.
start_sidecache() {
	build_sidecache
	local logf pid addr i
	logf=$(mktemp "$WORK/sidecache-XXXXXX.log")
	"${SERVER_PREFIX[@]}" "$SIDECACHE_BIN" --listen 127.0.0.1:0 --log-format json "$@" 2>"$logf" &
	pid=$!
	PIDS+=("$pid")
	addr=
	for ((i = 0; i < 100; i++)); do
		addr=$(awk '/"msg":"listening"/ { if (match($0, /"addr":"[^"]*"/)) print substr($0, RSTART + 8, RLENGTH - 9) }' "$logf")
		[[ -n $addr ]] && break
		kill -0 "$pid" 2>/dev/null || die "sidecache exited: $(tail -n 5 "$logf")"
		sleep 0.1
	done
	[[ -n $addr ]] || die "sidecache did not log its address in 10 s: $(tail -n 5 "$logf")"
	STARTED_PORT=${addr##*:}
	wait_ready "$pid" "$STARTED_PORT" || die "sidecache on $addr did not answer PING: $(tail -n 5 "$logf")"
	log "sidecache pid $pid on $addr${*:+ with $*}"
}

# commands_file OP prints the path of a file of RESP commands doing OP
# (SET or GET) once on every key redis-benchmark -r KEYS can pick
# ("key:" and 12 digits), with DATA-byte values for SET.
commands_file() {
	local op=$1 f=$WORK/$1-$KEYS-$DATA.resp
	if [[ ! -s $f ]]; then
		awk -v op="$op" -v n="$KEYS" -v d="$DATA" 'BEGIN {
			v = ""
			for (i = 0; i < d; i++) v = v "x"
			for (i = 0; i < n; i++) {
				k = sprintf("key:%012d", i)
				if (op == "SET")
					printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, d, v
				else
					printf "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", length(k), k
			}
		}' >"$f"
	fi
	echo "$f"
}

# pipe_all PORT OP sends OP on every key through redis-cli --pipe and
# checks that every command was answered without an error.
pipe_all() {
	local port=$1 op=$2 f out
	f=$(commands_file "$op")
	run_bg "$f" "$WORK/pipe.out" redis-cli -h 127.0.0.1 -p "$port" --pipe ||
		die "$op pass on port $port failed: $(cat "$WORK/pipe.out")"
	out=$(<"$WORK/pipe.out")
	[[ $out == *"errors: 0, replies: $KEYS"* ]] || die "$op pass on port $port: $out"
}

# info_field PORT SECTION FIELD prints one INFO field, or "-" if the target
# has no such field (or PORT is "-").
info_field() {
	local v=
	if [[ $1 != - ]]; then
		v=$(redis-cli -h 127.0.0.1 -p "$1" info "$2" 2>/dev/null | tr -d '\r' |
			awk -F: -v f="$3" '$1 == f { print $2 }')
	fi
	echo "${v:--}"
}

# counters KS_PORT L1_PORT prints "keyspace_hits keyspace_misses l1_hits
# l1_misses", the first two from KS_PORT's INFO, the others from L1_PORT's.
counters() {
	echo "$(info_field "$1" stats keyspace_hits) $(info_field "$1" stats keyspace_misses)" \
		"$(info_field "$2" sidecache l1_hits) $(info_field "$2" sidecache l1_misses)"
}

# percent H0 M0 H1 M1 prints 100*(H1-H0)/((H1-H0)+(M1-M0)), or "-".
percent() {
	awk -v h0="$1" -v m0="$2" -v h1="$3" -v m1="$4" 'BEGIN {
		if (h0 == "-" || h1 == "-" || m0 == "-" || m1 == "-" || (h1 - h0) + (m1 - m0) <= 0) { print "-"; exit }
		printf "%.2f\n", 100 * (h1 - h0) / ((h1 - h0) + (m1 - m0))
	}'
}

# requests DEPTH prints redis-benchmark's -n for a run at pipeline DEPTH.
requests() {
	if [[ -n $N ]]; then
		echo "$N"
	elif [[ $1 == 1 ]]; then
		echo "$N_P1"
	else
		echo "$N_P16"
	fi
}

# measure ROUND ORDER NAME PORT TEST DEPTH [KS_PORT [L1_PORT]] appends one
# raw row for one redis-benchmark run against PORT to $RAW:
# round order target test depth rps avg p50 p95 p99 max hit% l1hit%.
# hit% is from KS_PORT's keyspace counters, l1hit% from L1_PORT's INFO
# sidecache (both default to PORT; "-" skips them).
measure() {
	local round=$1 order=$2 name=$3 port=$4 test=$5 depth=$6 n csv row hit l1
	local ks_port=${7:-$4} l1_port=${8:-$4}
	local -a c0 c1
	n=$(requests "$depth")
	if [[ $test == get && $READ_PASS == 1 ]]; then
		pipe_all "$port" GET # unmeasured: every key read once, so the run measures hits
	fi
	read -r -a c0 <<<"$(counters "$ks_port" "$l1_port")"
	run_bg /dev/null "$WORK/bench.out" redis-benchmark -h 127.0.0.1 -p "$port" \
		-t "$test" -n "$n" -c "$CLIENTS" -d "$DATA" -r "$KEYS" -P "$depth" --csv ||
		die "redis-benchmark against $name failed: $(cat "$WORK/bench.out")"
	csv=$(<"$WORK/bench.out")
	read -r -a c1 <<<"$(counters "$ks_port" "$l1_port")"
	# The data row: "TEST","rps","avg","min","p50","p95","p99","max".
	row=$(printf '%s\n' "$csv" | tr -d '\r"' | awk -F, -v t="${test^^}" '$1 == t && NF == 8 { print $2, $3, $5, $6, $7, $8 }')
	[[ -n $row ]] || die "no $test row in redis-benchmark output for $name: $csv"
	hit=- l1=-
	if [[ $test == get ]]; then
		hit=$(percent "${c0[0]}" "${c0[1]}" "${c1[0]}" "${c1[1]}")
		l1=$(percent "${c0[2]}" "${c0[3]}" "${c1[2]}" "${c1[3]}")
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$order" "$name" "${test^^}" "$depth" \
		"${row// /$'\t'}" "$hit" "$l1" >>"$RAW"
	local msg
	msg=$(awk '{ printf "%.0f rps, p50 %s ms, p99 %s ms", $1, $3, $5 }' <<<"$row")
	[[ $hit == - ]] || msg+=", hits $hit%"
	[[ $l1 == - ]] || msg+=", L1 hits $l1%"
	log "round $round ${test^^} -P $depth $name: $msg"
}

# describe_setup prints the Markdown list items naming the tree, the
# machine and the CPU pinning of a run.
describe_setup() {
	local rev
	rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")
	if [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null) ]]; then
		rev="$rev + uncommitted changes"
	fi
	echo "- tree: $rev; $("$REDIS_SERVER" --version | awk '{ print $1, $2, $3 }'); $(redis-benchmark --version)"
	echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown)), load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
	if [[ $PIN == 1 ]]; then
		echo "- pinned: servers on CPU $SERVER_CPUS, redis-benchmark on CPU $CLIENT_CPUS"
	else
		echo "- not pinned: servers and redis-benchmark share all CPUs"
	fi
}

# BENCH_AWK holds awk functions for the summaries: median and minimum of a
# space-separated list ("-" entries are skipped by minimum), and ratio B/A
# with two decimals ("-" when A is not positive).
# shellcheck disable=SC2034 # used by the sourcing scripts
BENCH_AWK='
	function median(s,    a, n, i, j, x) {
		n = split(s, a, " ")
		for (i = 2; i <= n; i++) { x = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
		if (n == 0) return ""
		return n % 2 ? a[(n + 1) / 2] + 0 : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	function minimum(s,    a, n, i, m) {
		n = split(s, a, " "); m = ""
		for (i = 1; i <= n; i++) if (a[i] != "-" && (m == "" || a[i] + 0 < m)) m = a[i] + 0
		return m == "" ? "-" : sprintf("%.2f", m)
	}
	function ratio(b, a) { return a > 0 ? sprintf("%.2f", b / a) : "-" }
'
