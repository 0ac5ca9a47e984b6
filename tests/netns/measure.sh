#!/usr/bin/env bash
# Measures what docs/testing-network.md reports: for each link setting,
# RTT (idle, then under a BBR bulk transfer), TCP goodput and nc-linkem's
# CPU use. Not a test: it prints numbers and asserts nothing.
#   tests/netns/measure.sh [SECONDS]     (needs root; NC_LINKEM or build/)
set -uo pipefail
. "$(dirname "$0")/lib.sh"
netns_init
netns_sweep_stale
secs=${1:-8}

A=$(netns_name a)
B=$(netns_name b)
netns_create "$A"
netns_create "$B"
for ns in "$A" "$B"; do netns_sysctl "$ns" net.ipv4.tcp_congestion_control=bbr; done

# rtt_summary < ping output -> "mean p99 max n"
rtt_summary() {
  python3 -c '
import re, sys
r = sorted(float(m.group(1)) for m in re.finditer(r"time=([0-9.]+) ms", sys.stdin.read()))
n = len(r)
print("%.3f %.3f %.3f %d" % (sum(r) / n, r[min(n - 1, int(n * 0.99))], r[-1], n) if n else "- - - 0")'
}

cpu_total() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["cpu_user_s"]+d["cpu_sys_s"], d["uptime_s"])' "$LINKEM_STATS"; }

measure() { # measure LABEL nc-linkem-args...
  local label=$1
  shift
  link_emulated "$A" "$B" "$@"
  local idle
  idle=$(ip netns exec "$A" ping -n -c 200 -i 0.01 "$LINK_ADDR_B" | rtt_summary)
  sleep 1.1 # a fresh stats file
  read -r cpu0 up0 < <(cpu_total)
  ip netns exec "$A" ping -n -i 0.05 -w $((secs + 1)) "$LINK_ADDR_B" >"$_netns_tmp/ping.load" &
  local ping_pid=$!
  netns_tcp_transfer "$A" "$B" "$LINK_ADDR_B" "$secs"
  wait "$ping_pid"
  local mbit_avg
  mbit_avg=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["mbit_avg"])' "$TCP_RESULT")
  linkem_stop
  read -r cpu1 up1 < <(cpu_total)
  local cpu_pct
  cpu_pct=$(awk -v c0="$cpu0" -v c1="$cpu1" -v u0="$up0" -v u1="$up1" 'BEGIN { printf "%.1f", 100 * (c1 - c0) / (u1 - u0) }')
  local loaded
  loaded=$(rtt_summary <"$_netns_tmp/ping.load")
  echo "== $label ($*)"
  echo "   RTT idle   mean/p99/max ms (n): $idle"
  echo "   RTT loaded mean/p99/max ms (n): $loaded"
  echo "   TCP BBR goodput: $TCP_MBIT Mbit/s after 1 s, $mbit_avg Mbit/s over the whole ${secs} s"
  echo "   nc-linkem CPU during the transfer: $cpu_pct% of one core;" \
       "queue drops a->b $(linkem_stat a_to_b.dropped_queue_packets)," \
       "TUN drops $(linkem_stat a_to_b.tun_tx_dropped), max held $(linkem_stat a_to_b.held_bytes_max) B"
}

measure "100 Mbit/s, 50 ms RTT" --delay-ms 25 --rate-mbit 100
measure "1 Gbit/s, 0 ms" --rate-mbit 1000
measure "unlimited, 0 ms" 
NETNS_LINKEM_FIFO=0 measure "100 Mbit/s, 50 ms RTT, normal scheduling" --delay-ms 25 --rate-mbit 100
