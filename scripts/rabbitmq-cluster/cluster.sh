#!/usr/bin/env bash
# A throwaway RabbitMQ cluster of three fresh nodes on this machine, for
# tests that need replication (streams) and a node that stops.
#
#   cluster.sh run -- CMD...   up, run CMD with MYXI_CLUSTER_URLS and
#                              MYXI_CLUSTER_CTL set, down (always, in a
#                              trap); exits with CMD's status
#   cluster.sh up | down       the same steps by hand (down also cleans up
#                              after a run that was killed)
#   cluster.sh ctl N ARGS...   rabbitmqctl for node N (1-3) of this cluster
#   cluster.sh stop-node N     shut node N down (its data stays)
#   cluster.sh start-node N    start node N again and wait for it
#   cluster.sh status          cluster_status seen from node 1, and memory
#
# The nodes are myxi-c1@localhost .. myxi-c3@localhost, AMQP on 127.0.0.1
# ports 5701-5703, Erlang distribution on 25701-25703, everything else
# (config, cookie, data, logs) under $MYXI_CLUSTER_DIR
# (default /tmp/myxi-rabbitmq-cluster), removed by down.
#
# The machine's own RabbitMQ node (rabbit@localhost on 5672) is never
# touched: the Debian wrappers in /usr/sbin switch to its user, home and
# cookie, and /etc/rabbitmq pins its name, flags and port, so this script
# calls the scripts of the release directly with its own environment file,
# configuration, enabled_plugins file and cookie (through HOME). It stops
# only nodes of its own, by their node names and recorded pids.
#
# Fixed names and ports mean one cluster at a time: run, up and down take
# a lock ($MYXI_CLUSTER_LOCK, default /tmp/myxi-rabbitmq-cluster.lock),
# waiting for it at most $MYXI_CLUSTER_LOCK_WAIT seconds (default 300).
set -euo pipefail

RMQ_SBIN=${RMQ_SBIN:-/usr/lib/rabbitmq/lib/rabbitmq_server-3.10.8/sbin}
BASE=${MYXI_CLUSTER_DIR:-/tmp/myxi-rabbitmq-cluster}
LOCK=${MYXI_CLUSTER_LOCK:-/tmp/myxi-rabbitmq-cluster.lock}
LOCK_WAIT=${MYXI_CLUSTER_LOCK_WAIT:-300}
NODES=(1 2 3)
AMQP_PORT_BASE=5700 # node N listens on AMQP_PORT_BASE+N
DIST_PORT_BASE=25700
# Bounded waits: a fresh node boots in a few seconds on this machine; a
# loaded CI runner gets several times that.
BOOT_TIMEOUT=${MYXI_CLUSTER_BOOT_TIMEOUT:-90}
STOP_TIMEOUT=${MYXI_CLUSTER_STOP_TIMEOUT:-60}

SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

node_name() { echo "myxi-c$1@localhost"; }
amqp_port() { echo $((AMQP_PORT_BASE + $1)); }
dist_port() { echo $((DIST_PORT_BASE + $1)); }
node_dir() { echo "$BASE/node$1"; }
urls() {
	local n out=()
	for n in "${NODES[@]}"; do out+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/"); done
	(IFS=,; echo "${out[*]}")
}

check_node_arg() {
	case "${1:-}" in 1 | 2 | 3) ;; *) die "node must be 1, 2 or 3, not '${1:-}'" ;; esac
}

# node_env N CMD...: runs CMD with node N's environment only. env -i drops
# whatever the caller exported (ERL_FLAGS, RABBITMQ_* of the shared node).
node_env() {
	local n=$1
	shift
	env_args "$n"
	env -i "${ENV_ARGS[@]}" "$@"
}

env_args() {
	local n=$1 d
	d=$(node_dir "$n")
	ENV_ARGS=(
		PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
		LANG=C.UTF-8 LC_ALL=C.UTF-8
		HOME="$BASE/home"
		RABBITMQ_CONF_ENV_FILE="$BASE/rabbitmq-env.conf"
		RABBITMQ_NODENAME="$(node_name "$n")"
		RABBITMQ_USE_LONGNAME=false
		RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf"
		RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config"
		RABBITMQ_CONFIG_FILES="$d/conf.d"
		RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
		RABBITMQ_MNESIA_BASE="$d/mnesia"
		RABBITMQ_MNESIA_DIR="$d/mnesia/$(node_name "$n")"
		RABBITMQ_LOG_BASE="$d/log"
		RABBITMQ_PID_FILE="$d/rabbitmq.pid"
		RABBITMQ_DIST_PORT="$(dist_port "$n")"
		RABBITMQ_CTL_DIST_PORT_MIN=$((35700 + 10 * n))
		RABBITMQ_CTL_DIST_PORT_MAX=$((35709 + 10 * n))
		RABBITMQ_SCHEDULER_BUSY_WAIT_THRESHOLD=none
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=+sbwt none +sbwtdcpu none +sbwtdio none -kernel inet_dist_use_interface {127,0,0,1}"
		ERL_EPMD_ADDRESS=127.0.0.1
		# Crash dumps (a CLI that cannot reach its node writes one) stay in
		# the cluster's directory, never in the caller's.
		ERL_CRASH_DUMP="$d/log/erl_crash.dump"
	)
}

ctl() {
	local n=$1
	shift
	check_node_arg "$n"
	[ -d "$(node_dir "$n")" ] || die "no cluster in $BASE (start one: $SELF up)"
	node_env "$n" "$RMQ_SBIN/rabbitmqctl" -n "$(node_name "$n")" "$@"
}

lock() {
	exec 9>"$LOCK"
	if ! flock -w "$LOCK_WAIT" 9; then
		die "another cluster holds $LOCK (waited ${LOCK_WAIT}s)"
	fi
}

port_free() { ! ss -Htln "sport = :$1" | grep -q .; }

prepare() {
	local n d
	[ -x "$RMQ_SBIN/rabbitmq-server" ] || die "no RabbitMQ release scripts in $RMQ_SBIN"
	for n in "${NODES[@]}"; do
		port_free "$(amqp_port "$n")" || die "port $(amqp_port "$n") is in use (a cluster left running? try: $SELF down)"
		port_free "$(dist_port "$n")" || die "port $(dist_port "$n") is in use"
	done
	rm -rf "$BASE"
	mkdir -p "$BASE/home"
	: >"$BASE/rabbitmq-env.conf"
	# A cookie of our own: the CLI and the three nodes find it in $HOME.
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$BASE/home/.erlang.cookie"
	chmod 400 "$BASE/home/.erlang.cookie"
	for n in "${NODES[@]}"; do
		d=$(node_dir "$n")
		mkdir -p "$d/mnesia" "$d/log" "$d/conf.d"
		# Only what the tests need: no management UI, no stream protocol
		# plugin (Myxi uses streams over AMQP 0.9.1).
		echo '[].' >"$d/enabled_plugins"
		cat >"$d/rabbitmq.conf" <<-EOF
			listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")
			loopback_users.guest = true
			log.file.level = info
			log.console = false
			# The default, stated: a stopped node must not pause the others.
			cluster_partition_handling = ignore
			# This machine is shared: do not let a test cluster eat it.
			vm_memory_high_watermark.relative = 0.2
			disk_free_limit.absolute = 200MB
		EOF
		# Nodes 2 and 3 join node 1 as they boot (peer discovery from this
		# list, retried while node 1 is still booting), so that no node
		# has to be stopped, joined and started again from the CLI.
		if [ "$n" != 1 ]; then
			cat >>"$d/rabbitmq.conf" <<-EOF
				cluster_formation.peer_discovery_backend = classic_config
				cluster_formation.classic_config.nodes.1 = $(node_name 1)
				cluster_formation.discovery_retry_limit = $BOOT_TIMEOUT
				cluster_formation.discovery_retry_interval = 1000
			EOF
		fi
	done
}

start_node() {
	local n=$1 d
	d=$(node_dir "$n")
	env_args "$n"
	# setsid in a subshell that is not a group leader does not fork, so $!
	# is the pid of the node's own session and process group (see
	# group_alive). 9>&-: the node must not inherit the lock, or it would
	# hold it for as long as it runs.
	(exec setsid env -i "${ENV_ARGS[@]}" "$RMQ_SBIN/rabbitmq-server" >>"$d/log/server.out" 2>&1 </dev/null 9>&-) &
	echo $! >"$d/launcher.pid"
}

await_node() {
	local n=$1 deadline=$((SECONDS + BOOT_TIMEOUT))
	# await_startup fails at once while the node is not yet registered
	# with epmd, so it is retried until the deadline.
	while [ "$SECONDS" -lt "$deadline" ]; do
		if ctl "$n" -q await_startup --timeout $((deadline - SECONDS + 1)) >/dev/null 2>&1; then
			return 0
		fi
		group_alive "$n" || break
		sleep 1
	done
	log "node $n did not boot within ${BOOT_TIMEOUT}s; last lines of its output:"
	tail -n 20 "$(node_dir "$n")/log/server.out" >&2 || true
	return 1
}

# The launcher is started with setsid, so its pid is also the process
# group of the node's processes (the script, erl/beam.smp and its helpers):
# stopping the group stops this node and nothing else.
group_alive() {
	local pgid
	pgid=$(cat "$(node_dir "$1")/launcher.pid" 2>/dev/null || true)
	[ -n "$pgid" ] && pgrep -g "$pgid" >/dev/null 2>&1
}

stop_node() {
	local n=$1 d pgid deadline
	d=$(node_dir "$n")
	pgid=$(cat "$d/launcher.pid" 2>/dev/null || true)
	[ -n "$pgid" ] || return 0
	# SIGTERM makes the Erlang VM stop gracefully (init:stop); no CLI
	# call, which costs seconds here and hangs on a node still booting.
	kill -TERM -- "-$pgid" 2>/dev/null || true
	deadline=$((SECONDS + STOP_TIMEOUT))
	while group_alive "$n" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
	if group_alive "$n"; then
		log "node $n did not stop within ${STOP_TIMEOUT}s: killing process group $pgid"
		kill -KILL -- "-$pgid" 2>/dev/null || true
		sleep 0.5
	fi
	rm -f "$d/launcher.pid"
}

# running_nodes: how many running cluster members node 1 sees.
running_nodes() {
	ctl 1 -q eval 'length(rabbit_nodes:all_running()).' 2>/dev/null | tr -d '[:space:]'
}

memory_report() {
	local n pid rss total=0
	for n in "${NODES[@]}"; do
		pid=$(cat "$(node_dir "$n")/rabbitmq.pid" 2>/dev/null || true)
		[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || continue
		rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
		total=$((total + rss))
		printf 'node %s (pid %s): RSS %d MiB\n' "$n" "$pid" $((rss / 1024))
	done
	printf 'cluster: RSS %d MiB\n' $((total / 1024))
}

up() {
	local t0 n
	t0=$(date +%s.%N)
	prepare
	log "starting $(node_name 1), $(node_name 2), $(node_name 3) (AMQP $(amqp_port 1)-$(amqp_port 3)) in $BASE"
	for n in "${NODES[@]}"; do start_node "$n"; done
	await_node 1 || { down; die "node 1 did not start"; }
	# Each CLI call takes seconds on a loaded machine: poll node 1's view
	# of the cluster rather than each node, until a deadline.
	local count=0 deadline=$((SECONDS + BOOT_TIMEOUT))
	while [ "$SECONDS" -lt "$deadline" ]; do
		count=$(running_nodes || true)
		[ "$count" = 3 ] && break
		sleep 1
	done
	[ "$count" = 3 ] || { down; die "node 1 sees ${count:-no} running nodes after ${BOOT_TIMEOUT}s, not 3 (logs in $BASE/node*/log)"; }
	log "cluster up in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')s: $(urls)"
	memory_report >&2
}

down() {
	local t0 n pids=()
	t0=$(date +%s.%N)
	[ -d "$BASE" ] || return 0
	for n in "${NODES[@]}"; do stop_node "$n" & pids+=($!); done
	for p in "${pids[@]}"; do wait "$p" || true; done
	rm -rf "$BASE"
	log "cluster down in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')s"
}

cmd=${1:-}
shift || true
case "$cmd" in
run)
	[ "${1:-}" = "--" ] && shift
	[ $# -gt 0 ] || die "usage: $0 run -- CMD..."
	lock
	trap 'down' EXIT
	trap 'exit 130' INT TERM
	t_up=$(date +%s.%N)
	up
	t_test=$(date +%s.%N)
	status=0
	MYXI_CLUSTER_URLS=$(urls) MYXI_CLUSTER_CTL=$SELF "$@" || status=$?
	t_down=$(date +%s.%N)
	memory_report >&2 || true
	trap - EXIT
	down
	t_end=$(date +%s.%N)
	log "$(awk -v a="$t_up" -v b="$t_test" -v c="$t_down" -v d="$t_end" 'BEGIN {printf "timing: up %.1fs, test %.1fs, down %.1fs, total %.1fs", b - a, c - b, d - c, d - a}')"
	exit "$status"
	;;
up)
	lock
	up
	echo "MYXI_CLUSTER_URLS=$(urls)"
	echo "MYXI_CLUSTER_CTL=$SELF"
	;;
down)
	lock
	down
	;;
ctl)
	n=${1:-}
	shift || true
	ctl "$n" "$@"
	;;
stop-node)
	check_node_arg "${1:-}"
	[ -d "$(node_dir "$1")" ] || die "no cluster in $BASE"
	stop_node "$1"
	;;
start-node)
	check_node_arg "${1:-}"
	[ -d "$(node_dir "$1")" ] || die "no cluster in $BASE"
	group_alive "$1" && die "node $1 is running"
	start_node "$1"
	await_node "$1"
	;;
status)
	ctl 1 cluster_status
	memory_report
	;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
