# shellcheck shell=bash
# Network-namespace test harness: emulated hosts on one machine.
#
# Source it, then:
#   netns_init                      # traps EXIT/INT/TERM/HUP -> netns_cleanup
#   A=$(netns_name a); B=$(netns_name b)
#   netns_create "$A"; netns_create "$B"
#   link_emulated "$A" "$B" --delay-ms 25 --loss 0.01 --rate-mbit 100
#   netns_exec "$A" ping -c 3 "$LINK_ADDR_B"
#
# Every namespace is named ncnt-<pid of the test shell>-<base>, so parallel
# runs never collide and netns_sweep_stale can tell which leftovers belong
# to a test that died without its trap (SIGKILL). Everything this file
# starts is recorded and netns_cleanup undoes it; every function is
# idempotent. Traffic stays inside the namespaces created here, on the
# private 10.77.0.0/16 range.
#
# Needs: root, iproute2, iputils ping, python3; nc-linkem from the build
# (NC_LINKEM, or NC_BUILD/bin/nc-linkem, or build/bin/nc-linkem).

NETNS_PREFIX=ncnt
NETNS_OWNER=${NETNS_OWNER:-$$}
_netns_created=()   # namespaces this shell created
_netns_pids=()      # background processes this shell started
_netns_tmp=""       # scratch directory (logs, stats files)
_netns_next_subnet=1

netns_die() { echo "FAIL: $*" >&2; exit 1; }
netns_log() { echo "# $*" >&2; }

_netns_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

_netns_find_linkem() {
  if [ -n "${NC_LINKEM:-}" ]; then
    echo "$NC_LINKEM"
  elif [ -n "${NC_BUILD:-}" ] && [ -x "$NC_BUILD/bin/nc-linkem" ]; then
    echo "$NC_BUILD/bin/nc-linkem"
  else
    echo "$_netns_here/../../build/bin/nc-linkem"
  fi
}

# Checks the prerequisites and installs the cleanup trap. A test that
# cannot run here (not root, no TUN, missing tool) exits 77: skipped.
netns_init() {
  NC_LINKEM=$(_netns_find_linkem)
  if [ "$(id -u)" -ne 0 ]; then echo "SKIP: needs root (network namespaces)" >&2; exit 77; fi
  local t
  for t in ip ping python3; do
    command -v "$t" >/dev/null 2>&1 || { echo "SKIP: $t is not installed (scripts/install-deps)" >&2; exit 77; }
  done
  [ -c /dev/net/tun ] || { echo "SKIP: /dev/net/tun is missing" >&2; exit 77; }
  [ -x "$NC_LINKEM" ] || netns_die "nc-linkem not found at $NC_LINKEM (build it, or set NC_LINKEM)"
  _netns_tmp=$(mktemp -d "/tmp/${NETNS_PREFIX}-${NETNS_OWNER}.XXXXXX")
  trap netns_cleanup EXIT
  trap 'exit 129' HUP
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# The namespace name a test should use for BASE (short: names stay readable
# in `ip netns list`).
netns_name() { echo "${NETNS_PREFIX}-${NETNS_OWNER}-$1"; }

netns_exec() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# netns_create NAME: a namespace with loopback up. No-op if this shell
# already created it; refuses a name that exists but is not ours.
netns_create() {
  local ns=$1 n
  for n in "${_netns_created[@]}"; do [ "$n" = "$ns" ] && return 0; done
  if [ -e "/var/run/netns/$ns" ]; then
    netns_die "netns $ns already exists and was not created by this test (stale? run netns_sweep_stale)"
  fi
  ip netns add "$ns" || netns_die "ip netns add $ns failed"
  _netns_created+=("$ns")
  ip -n "$ns" link set lo up
}

# netns_sysctl NS KEY=VALUE: per-namespace sysctl (net.* keys are per netns).
netns_sysctl() {
  ip netns exec "$1" sysctl -q -w "$2" >/dev/null || netns_die "sysctl $2 in $1 failed"
}

_netns_free_dev() { # _netns_free_dev NS BASE -> first BASE<n> not present in NS
  local i=0
  while ip -n "$1" link show "$2$i" >/dev/null 2>&1; do i=$((i + 1)); done
  echo "$2$i"
}

_netns_alloc_subnet() { # sets _sub to the next 10.77.<n>.0/30 of this shell
  _sub=$_netns_next_subnet
  _netns_next_subnet=$((_netns_next_subnet + 1))
  [ "$_sub" -le 255 ] || netns_die "out of 10.77.x.0/30 subnets"
}

# link_veth A B [ADDR_A ADDR_B]: a veth pair from namespace A to B, created
# inside A (nothing ever appears in the root namespace). Addresses default
# to the next free 10.77.N.1/30 and .2/30. Sets LINK_DEV_A, LINK_DEV_B,
# LINK_ADDR_A, LINK_ADDR_B (addresses without the prefix length).
link_veth() {
  local a=$1 b=$2 addr_a=${3:-} addr_b=${4:-} _sub
  if [ -z "$addr_a" ]; then
    _netns_alloc_subnet
    addr_a=10.77.$_sub.1/30
    addr_b=10.77.$_sub.2/30
  fi
  LINK_DEV_A=$(_netns_free_dev "$a" veth)
  LINK_DEV_B=$(_netns_free_dev "$b" veth)
  ip -n "$a" link add "$LINK_DEV_A" type veth peer name "$LINK_DEV_B" netns "$b" ||
    netns_die "creating veth $a:$LINK_DEV_A <-> $b:$LINK_DEV_B failed"
  ip -n "$a" addr add "$addr_a" dev "$LINK_DEV_A" || netns_die "address $addr_a on $a failed"
  ip -n "$b" addr add "$addr_b" dev "$LINK_DEV_B" || netns_die "address $addr_b on $b failed"
  ip -n "$a" link set "$LINK_DEV_A" up
  ip -n "$b" link set "$LINK_DEV_B" up
  LINK_ADDR_A=${addr_a%/*}
  LINK_ADDR_B=${addr_b%/*}
}

# link_tbf NS DEV RATE_MBIT [LATENCY_MS]: shape DEV's egress with tbf.
# burst: 4 ms worth at the rate (what a 250 Hz timer needs), at least
# 10 full packets; latency (queue) defaults to 50 ms: one BDP for a 50 ms
# path. Replaces any root qdisc already there.
link_tbf() {
  local ns=$1 dev=$2 rate=$3 latency_ms=${4:-50}
  local burst
  [[ $rate =~ ^[0-9]+([.][0-9]+)?$ ]] || netns_die "link_tbf: rate \"$rate\" is not a number of Mbit/s"
  burst=$(awk -v r="$rate" 'BEGIN { b = int(r * 1e6 / 8 * 0.004); print (b > 15140 ? b : 15140) }')
  ip netns exec "$ns" tc qdisc replace dev "$dev" root tbf rate "${rate}mbit" \
    burst "$burst" latency "${latency_ms}ms" ||
    netns_die "tbf ${rate}mbit on $ns:$dev failed"
}

# link_emulated A B [nc-linkem options...]: starts nc-linkem between A and
# B in the background and waits until the link carries a ping. Default
# addresses: the next 10.77.N.1/30 and .2/30 (override with --addr-a /
# --addr-b). Sets LINK_ADDR_A, LINK_ADDR_B, LINK_DEV_A, LINK_DEV_B,
# LINKEM_PID, LINKEM_LOG (its stderr) and LINKEM_STATS (its JSON stats).
link_emulated() {
  local a=$1 b=$2 _sub
  shift 2
  local args=("$@") addr_a="" addr_b="" i high_loss=0
  for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
      --addr-a) addr_a=${args[i + 1]} ;;
      --addr-b) addr_b=${args[i + 1]} ;;
      --loss) awk -v v="${args[i + 1]}" 'BEGIN { if (v ~ /%$/) { sub(/%$/, "", v); v /= 100 }
                                                  exit !(v + 0 >= 0.5) }' && high_loss=1 ;;
    esac
  done
  if [ -z "$addr_a" ]; then
    _netns_alloc_subnet
    addr_a=10.77.$_sub.1/30
    addr_b=10.77.$_sub.2/30
    args+=(--addr-a "$addr_a" --addr-b "$addr_b")
  fi
  LINK_ADDR_A=${addr_a%/*}
  LINK_ADDR_B=${addr_b%/*}
  local n=${#_netns_pids[@]}
  LINKEM_LOG=$_netns_tmp/linkem$n.log
  LINKEM_STATS=$_netns_tmp/linkem$n.json
  local rt=()
  # SCHED_FIFO keeps the delay honest while other tests load both cores;
  # NETNS_LINKEM_FIFO=0 turns it off.
  [ "${NETNS_LINKEM_FIFO:-10}" != 0 ] && rt=(--sched-fifo "${NETNS_LINKEM_FIFO:-10}")
  _netns_spawn "$NC_LINKEM" --ns-a "$a" --ns-b "$b" --exit-with-parent \
    --stats-file "$LINKEM_STATS" "${rt[@]}" "${args[@]}" 2>"$LINKEM_LOG"
  LINKEM_PID=$!
  _netns_pids+=("$LINKEM_PID")
  local t
  for ((t = 0; t < 100; t++)); do
    grep -q '^nc-linkem: ready' "$LINKEM_LOG" 2>/dev/null && break
    kill -0 "$LINKEM_PID" 2>/dev/null || { cat "$LINKEM_LOG" >&2; netns_die "nc-linkem exited during setup"; }
    sleep 0.05
  done
  grep -q '^nc-linkem: ready' "$LINKEM_LOG" || { cat "$LINKEM_LOG" >&2; netns_die "nc-linkem not ready after 5 s"; }
  LINK_DEV_A=$(sed -n 's/^nc-linkem: ready: [^ ]* on \([^ ]*\) in .* <-> .*/\1/p' "$LINKEM_LOG")
  LINK_DEV_B=$(sed -n 's/^nc-linkem: ready: .* <-> [^ ]* on \([^ ]*\) in .*/\1/p' "$LINKEM_LOG")
  [ "$high_loss" = 1 ] && return 0 # a ping may never get through
  for ((t = 0; t < 20; t++)); do
    ip netns exec "$a" ping -n -q -c 1 -W 1 "$LINK_ADDR_B" >/dev/null 2>&1 && return 0
  done
  cat "$LINKEM_LOG" >&2
  netns_die "emulated link $a:$LINK_ADDR_A <-> $b:$LINK_ADDR_B does not carry pings"
}

# _netns_spawn CMD...: CMD in the background as a direct child of this
# shell. The subshell drops our traps and execs, so a signal meant for CMD
# never runs our cleanup in a copy of this shell (bash keeps the traps in
# an asynchronous subshell that has not exec'd yet).
_netns_spawn() {
  (
    trap - EXIT HUP INT TERM
    exec "$@"
  ) &
}

# netns_bg NS CMD...: run CMD inside NS in the background, recorded for
# cleanup. Sets NETNS_BG_PID (CMD's own pid).
netns_bg() {
  local ns=$1
  shift
  _netns_spawn ip netns exec "$ns" "$@"
  NETNS_BG_PID=$!
  _netns_pids+=("$NETNS_BG_PID")
}

_netns_kill_pids() { # TERM, up to 2 s grace, then KILL; only the given pids
  local p alive=() t
  for p in "$@"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
  [ ${#alive[@]} -eq 0 ] && return 0
  kill -TERM "${alive[@]}" 2>/dev/null
  for ((t = 0; t < 40; t++)); do
    local still=()
    for p in "${alive[@]}"; do kill -0 "$p" 2>/dev/null && still+=("$p"); done
    [ ${#still[@]} -eq 0 ] && break
    sleep 0.05
  done
  kill -KILL "${alive[@]}" 2>/dev/null
  return 0
}

_netns_delete() { # kill what still runs inside NS, then delete it
  local ns=$1
  [ -e "/var/run/netns/$ns" ] || return 0
  local pids
  pids=$(ip netns pids "$ns" 2>/dev/null)
  # shellcheck disable=SC2086
  [ -n "$pids" ] && _netns_kill_pids $pids
  ip netns del "$ns" 2>/dev/null || true
}

# netns_cleanup: stops every process started here (nc-linkem first, which
# removes its TUN devices), kills whatever still runs inside our
# namespaces, deletes them (their veths go with them) and the scratch
# directory. Safe to call any number of times.
netns_cleanup() {
  local rc=$?
  if [ ${#_netns_pids[@]} -gt 0 ]; then
    _netns_kill_pids "${_netns_pids[@]}"
    local p
    for p in "${_netns_pids[@]}"; do { wait "$p"; } 2>/dev/null; done
  fi
  _netns_pids=()
  local ns
  for ns in "${_netns_created[@]}"; do _netns_delete "$ns"; done
  _netns_created=()
  if [ -n "$_netns_tmp" ] && [ -d "$_netns_tmp" ]; then
    [ -n "${NETNS_KEEP_LOGS:-}" ] && cp -r "$_netns_tmp" "$NETNS_KEEP_LOGS" 2>/dev/null
    rm -rf "$_netns_tmp"
  fi
  return $rc
}

# netns_sweep_stale: deletes namespaces ncnt-<pid>-* whose test shell is
# gone (it was SIGKILLed, so its trap never ran), with whatever runs in
# them, and their scratch directories. Never touches a live test's.
netns_sweep_stale() {
  local ns owner d
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    case $ns in "$NETNS_PREFIX"-*-*) ;; *) continue ;; esac
    owner=${ns#"$NETNS_PREFIX"-}
    owner=${owner%%-*}
    [[ $owner =~ ^[0-9]+$ ]] || continue
    kill -0 "$owner" 2>/dev/null && continue
    netns_log "removing stale namespace $ns (its test, pid $owner, is gone)"
    _netns_delete "$ns"
  done
  for d in /tmp/"$NETNS_PREFIX"-*.*; do
    [ -d "$d" ] || continue
    owner=${d#/tmp/"$NETNS_PREFIX"-}
    owner=${owner%%.*}
    [[ $owner =~ ^[0-9]+$ ]] || continue
    kill -0 "$owner" 2>/dev/null || rm -rf "$d"
  done
}

# linkem_stat KEY_PATH: a number from the last stats file, e.g.
# linkem_stat a_to_b.dropped_loss_packets
linkem_stat() {
  python3 -c '
import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."):
    v = v[k]
print(v)' "$LINKEM_STATS" "$1"
}

# linkem_stop: SIGTERM to the last nc-linkem, wait for its final stats.
linkem_stop() {
  kill -TERM "$LINKEM_PID" 2>/dev/null
  { wait "$LINKEM_PID"; } 2>/dev/null
  return 0
}

# netns_tcp_transfer SRC_NS DST_NS DST_ADDR SECONDS: one bulk TCP transfer
# from SRC_NS to DST_ADDR (in DST_NS) with tcpbench.py; the congestion
# control is each namespace's own (netns_sysctl ...tcp_congestion_control).
# Sets TCP_RESULT to the receiver's JSON file and TCP_MBIT to the goodput
# after its 1 s warm-up, in 10^6 bit/s.
netns_tcp_transfer() {
  local src=$1 dst=$2 addr=$3 secs=$4 t
  local n=${#_netns_pids[@]}
  local ready=$_netns_tmp/tcp$n.ready
  TCP_RESULT=$_netns_tmp/tcp$n.json
  netns_bg "$dst" python3 "$_netns_here/tcpbench.py" recv --bind "$addr" --port 5201 \
    --ready "$ready" --json "$TCP_RESULT" >/dev/null
  local rpid=$NETNS_BG_PID
  for ((t = 0; t < 100; t++)); do [ -e "$ready" ] && break; sleep 0.05; done
  [ -e "$ready" ] || netns_die "tcpbench receiver did not start in $dst"
  ip netns exec "$src" python3 "$_netns_here/tcpbench.py" send --to "$addr" --port 5201 \
    --seconds "$secs" || netns_die "tcpbench sender failed ($src -> $addr)"
  wait "$rpid" || netns_die "tcpbench receiver failed in $dst"
  TCP_MBIT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["mbit_after_warmup"])' "$TCP_RESULT")
}
