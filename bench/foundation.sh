#!/usr/bin/env bash
# Foundation benchmarks (issue: novacrond manages real QEMU VMs):
#   1. API: GET /v1/vms with 100 VMs defined — p50/p99 at a fixed 500 req/s
#      (hey, 10 workers x 50 req/s) and peak req/s (wrk, 2 threads x 50 conns)
#   2. daemon boot-to-ready with 100 VMs defined (median of 5 restarts)
#   3. novacrond RSS with 100 defined VMs
#   4. VM create -> first guest heartbeat (median of 3), TCG
# Usage: bench/foundation.sh            (after `make build guest`)
# It runs on loopback only and cleans up after itself.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=$top/build/bin
tmp=$(mktemp -d /tmp/nc-bench.XXXXXX)
data=$tmp/data
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  pkill -9 -f "$tmp/data/vms" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

start_daemon() {
  "$bin/novacrond" --data-dir "$data" --listen 127.0.0.1:0 --log-level warn \
    >>"$tmp/novacrond.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do
    [ -S "$data/api.sock" ] && curl -sf --unix-socket "$data/api.sock" http://x/readyz >/dev/null && return 0
    sleep 0.02
  done
  echo "novacrond did not become ready" >&2
  cat "$tmp/novacrond.log" >&2
  exit 1
}
stop_daemon() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
api() { curl -sf --unix-socket "$data/api.sock" -H 'Content-Type: application/json' "$@"; }

mkdir -p "$data"
start_daemon
api -X POST -d @"$top/build/guest/image.json" http://x/v1/images >/dev/null
for i in $(seq 1 100); do
  api -X POST -d "{\"name\":\"vm-$i\",\"image\":\"nc-test\",\"memory\":\"256M\"}" http://x/v1/vms >/dev/null
done
stop_daemon
# The TCP port is picked at start: restart with a fixed free port for the
# load tools.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/novacrond" --data-dir "$data" --listen 127.0.0.1:$port --log-level warn >>"$tmp/novacrond.log" 2>&1 &
pid=$!
for _ in $(seq 200); do curl -sf http://127.0.0.1:$port/readyz >/dev/null && break; sleep 0.02; done
token=$(cat "$data/api.token")
url=http://127.0.0.1:$port/v1/vms
n=$(curl -sf -H "Authorization: Bearer $token" "$url" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["vms"]))')
echo "== API: GET /v1/vms with $n VMs defined ($(curl -sf -H "Authorization: Bearer $token" "$url" | wc -c) bytes per response)"
hey -z 15s -c 10 -q 50 -H "Authorization: Bearer $token" "$url" >"$tmp/hey.txt"
p50=$(awk '/50% in/ {print $3*1000}' "$tmp/hey.txt")
p99=$(awk '/99% in/ {print $3*1000}' "$tmp/hey.txt")
rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/hey.txt")
codes=$(awk '/Status code distribution/ {f=1; next} f && NF {print} ' "$tmp/hey.txt" | tr -s ' ' | tr '\n' ';')
echo "fixed rate: ${rps} req/s achieved, p50 ${p50} ms, p99 ${p99} ms (target p99 <= 10 ms); codes:${codes}"
wrk -t2 -c50 -d15s --latency -H "Authorization: Bearer $token" "$url" >"$tmp/wrk.txt"
peak=$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk.txt")
wp99=$(awk '/ 99%/ {print $2}' "$tmp/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $5}' "$tmp/wrk.txt")
echo "peak: ${peak} req/s (wrk -t2 -c50, p99 under saturation ${wp99}${non2xx:+, non-2xx $non2xx})"

rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
echo "== novacrond RSS with $n defined VMs (after the load): $((rss_kb / 1024)) MiB (${rss_kb} kB)"
stop_daemon

echo "== boot-to-ready with $n VMs defined (5 restarts)"
vals=()
for _ in 1 2 3 4 5; do
  start_daemon
  v=$(curl -sf --unix-socket "$data/api.sock" http://x/readyz | python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["boot_to_ready_seconds"]*1000))')
  vals+=("$v")
  stop_daemon
done
med=$(printf '%s\n' "${vals[@]}" | sort -n | sed -n 3p)
echo "boot-to-ready ms: ${vals[*]} -> median ${med} ms (target <= 1000 ms)"

echo "== VM create -> first heartbeat (TCG, 256 MiB, 3 runs)"
start_daemon
times=()
for i in 1 2 3; do
  t0=$(date +%s%N)
  api -X POST -d "{\"name\":\"boot-$i\",\"image\":\"nc-test\",\"memory\":\"256M\",\"start\":true}" http://x/v1/vms >/dev/null
  log=$data/vms/boot-$i/serial.log
  for _ in $(seq 3000); do grep -q NCHB "$log" 2>/dev/null && break; sleep 0.005; done
  t1=$(date +%s%N)
  grep -q NCHB "$log" || { echo "no heartbeat from boot-$i" >&2; exit 1; }
  times+=("$(((t1 - t0) / 1000000))")
  op=$(api -X DELETE http://x/v1/vms/boot-$i | python3 -c 'import json,sys; print(json.load(sys.stdin)["operation"]["id"])')
  api "http://x/v1/operations/$op?wait_s=30" >/dev/null
done
med=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)
echo "create -> first heartbeat ms: ${times[*]} -> median ${med} ms"
kvm=$(curl -sf --unix-socket "$data/api.sock" http://x/readyz | python3 -c 'import json,sys; print([c["message"] for c in json.load(sys.stdin)["components"] if c["name"]=="accel-probe"][0])')
echo "accelerator: $kvm"
