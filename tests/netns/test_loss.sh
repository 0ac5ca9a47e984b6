#!/usr/bin/env bash
# Loss over an emulated link: 1000 pings through a direction that drops
# 10% must lose 7-13%, exactly as many as nc-linkem counts, the same seed
# must lose the same pings again, and 10% each way must lose 1-0.9^2 = 19%.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
netns_init
netns_sweep_stale

A=$(netns_name a)
B=$(netns_name b)
netns_create "$A"
netns_create "$B"

# ping_lost NS ADDR -> number of 1000 pings without a reply
ping_lost() {
  local out rx
  out=$(ip netns exec "$1" ping -n -q -c 1000 -i 0.002 -W 1 "$2")
  rx=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$out")
  [ -n "$rx" ] || netns_die "cannot read ping's summary: $out"
  echo $((1000 - rx))
}

lost_runs=()
for run in 1 2; do
  link_emulated "$A" "$B" --delay-ms 1 --dir a-b --loss 0.1 --seed 42
  lost=$(ping_lost "$A" "$LINK_ADDR_B")
  linkem_stop
  counted=$(linkem_stat a_to_b.dropped_loss_packets)
  back=$(linkem_stat b_to_a.dropped_loss_packets)
  # link_emulated pinged until one got through: every probe but the last was lost
  probes=$(($(linkem_stat a_to_b.packets_in) - 1000))
  echo "run $run: 10% a->b, seed 42: lost $lost of 1000 pings; nc-linkem dropped $counted a->b" \
       "($((probes - 1)) of them readiness probes), $back b->a"
  [ "$lost" -ge 70 ] && [ "$lost" -le 130 ] || netns_die "lost $lost of 1000 pings at 10% loss, want 70..130"
  [ "$counted" -eq $((lost + probes - 1)) ] ||
    netns_die "nc-linkem counted $counted losses a->b, but ping lost $lost and $((probes - 1)) probes were lost"
  [ "$back" -eq 0 ] || netns_die "nc-linkem dropped $back packets b->a, where loss is 0"
  lost_runs+=("$lost")
done
[ "${lost_runs[0]}" -eq "${lost_runs[1]}" ] ||
  netns_die "seed 42 lost ${lost_runs[0]} pings, then ${lost_runs[1]}: runs are not reproducible"

link_emulated "$A" "$B" --delay-ms 1 --loss 10% --seed 7
lost=$(ping_lost "$A" "$LINK_ADDR_B")
echo "10% each way: lost $lost of 1000 pings (expected ~190)"
[ "$lost" -ge 150 ] && [ "$lost" -le 230 ] || netns_die "lost $lost of 1000 pings at 10% each way, want 150..230"
echo "PASS"
