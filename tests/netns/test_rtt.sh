#!/usr/bin/env bash
# RTT over an emulated link: 25 ms each way must measure 50 ms +- 5 ms, and
# no echo may come back faster than the configured delay. A second link
# with asymmetric delay and jitter must keep its bounds.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
netns_init
netns_sweep_stale

A=$(netns_name a)
B=$(netns_name b)
netns_create "$A"
netns_create "$B"

# ping_rtts NS ADDR COUNT INTERVAL -> "received mean p50 p99 min max" (ms)
ping_rtts() {
  ip netns exec "$1" ping -n -c "$3" -i "$4" -W 2 "$2" | python3 -c '
import re, sys
r = sorted(float(m.group(1)) for m in re.finditer(r"time=([0-9.]+) ms", sys.stdin.read()))
n = len(r)
if not n:
    print("0 0 0 0 0 0"); sys.exit()
print(n, "%.3f %.3f %.3f %.3f %.3f" % (sum(r) / n, r[n // 2], r[min(n - 1, int(n * 0.99))], r[0], r[-1]))'
}

# in_range NAME VALUE LO HI
in_range() {
  awk -v v="$2" -v lo="$3" -v hi="$4" 'BEGIN { exit !(v >= lo && v <= hi) }' ||
    netns_die "$1 = $2, want $3..$4"
}

link_emulated "$A" "$B" --delay-ms 25
read -r n mean p50 p99 min max < <(ping_rtts "$A" "$LINK_ADDR_B" 100 0.02)
echo "symmetric 25 ms: $n/100 replies, RTT mean $mean p50 $p50 p99 $p99 min $min max $max ms"
[ "$n" -eq 100 ] || netns_die "lost $((100 - n)) of 100 pings on a link without loss"
in_range "RTT mean (ms)" "$mean" 45 55
in_range "RTT min (ms), never below 2 x 25 ms" "$min" 50 55

# Asymmetric: 30 +- 5 ms out, 20 ms back; jitter never reorders.
netns_create "$(netns_name c)"
C=$(netns_name c)
link_emulated "$A" "$C" --dir a-b --delay-ms 30 --jitter-ms 5 --dir b-a --delay-ms 20 --seed 3
read -r n mean p50 p99 min max < <(ping_rtts "$A" "$LINK_ADDR_B" 100 0.02)
echo "30+-5 ms out, 20 ms back: $n/100 replies, RTT mean $mean p50 $p50 p99 $p99 min $min max $max ms"
[ "$n" -eq 100 ] || netns_die "lost $((100 - n)) of 100 pings on a link without loss"
in_range "RTT mean (ms)" "$mean" 45 55
in_range "RTT min (ms), never below 20 + 25 ms" "$min" 45 55
in_range "RTT p50 (ms)" "$p50" 46 54
echo "PASS"
