#!/usr/bin/env bash
# Throughput over 100 Mbit/s with a 50 ms RTT: one TCP stream with BBR
# (set per namespace) must reach >= 80 Mbit/s of goodput after a 1 s
# warm-up, and never more than the link carries. Two ways to get the
# rate: nc-linkem's own limiter, and tc tbf on the TUN device with
# nc-linkem giving only the delay.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
netns_init
netns_sweep_stale

A=$(netns_name a)
B=$(netns_name b)
netns_create "$A"
netns_create "$B"
for ns in "$A" "$B"; do netns_sysctl "$ns" net.ipv4.tcp_congestion_control=bbr; done

check_rate() { # check_rate WHAT MBIT
  awk -v v="$2" 'BEGIN { exit !(v >= 80) }' || netns_die "$1: $2 Mbit/s, want >= 80"
  # 1448 of every 1500 bytes are payload: 96.5 Mbit/s at most, plus sampling slack
  awk -v v="$2" 'BEGIN { exit !(v <= 99) }' || netns_die "$1: $2 Mbit/s is more than a 100 Mbit/s link carries"
}

link_emulated "$A" "$B" --delay-ms 25 --rate-mbit 100
netns_tcp_transfer "$A" "$B" "$LINK_ADDR_B" 6
linkem_stop
echo "nc-linkem 100 Mbit/s, 25 ms each way, BBR: $TCP_MBIT Mbit/s after warm-up" \
     "(linkem: $(linkem_stat a_to_b.dropped_queue_packets) queue drops," \
     "$(linkem_stat a_to_b.tun_tx_dropped) TUN drops, CPU $(linkem_stat cpu_sys_s) s sys" \
     "+ $(linkem_stat cpu_user_s) s user over $(linkem_stat uptime_s) s)"
check_rate "nc-linkem rate" "$TCP_MBIT"

link_emulated "$A" "$B" --delay-ms 25
link_tbf "$A" "$LINK_DEV_A" 100
netns_tcp_transfer "$A" "$B" "$LINK_ADDR_B" 6
echo "tbf 100 Mbit/s on $A:$LINK_DEV_A + nc-linkem 25 ms each way, BBR: $TCP_MBIT Mbit/s after warm-up"
check_rate "tbf rate" "$TCP_MBIT"
echo "PASS"
