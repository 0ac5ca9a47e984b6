#!/usr/bin/env bash
# Records real QEMU precopy migration streams of the test guest for the
# qstream codec tests: tests/data/qstream/NAME.qstream.zst plus a line in
# tests/data/qstream/streams.txt that the tests read.
#
#   tests/unit/qstream/record.sh        record the standard set (bottom)
#   tests/unit/qstream/record.sh NAME QEMU MEM "KNOBS" SETTLE_S [BASE]
#                                       record one stream as NAME
#
# Each recording boots build/guest under TCG (pc machine, -nodefaults),
# waits for the workload's NCREADY plus SETTLE_S seconds of dirtying, then
# runs QMP `migrate exec:cat > FILE` with default capabilities and
# parameters and waits for "completed". FILE is the stream exactly as QEMU
# writes it to a migration socket (no return path).
#
# Storage: zstd -19 --long. Every stream holds the same guest kernel image
# (~45 MiB of the guest's RAM), so a stream may name a BASE stream recorded
# before it and is then compressed with --patch-from=BASE; the test
# decompresses BASE first and hands it to zstd as the prefix
# (ZSTD_DCtx_refPrefix). That keeps the set near 15 MiB instead of 11 MiB a
# stream. Re-recording a base means re-recording the streams made from it
# (the standard set does all of them in order).
#
# streams.txt columns: name base qemu-version raw-bytes normal duplicate
# dirty-sync-count knobs... where normal and duplicate are QEMU's own
# query-migrate counts of pages sent whole and as zero pages, which the
# parser's counts must match.
#
# Environment: NC_GUEST_DIR (default build/guest), NC_QSTREAM_OUT (default
# tests/data/qstream), QEMU72 (a QEMU 7.2 binary; skipped when unset).
# QEMU 7.2 is Debian bookworm's own and is not installed over 10.0:
#   apt-get download 'qemu-system-x86=1:7.2*' 'qemu-system-common=1:7.2*'
#   for d in qemu-system-*7.2*.deb; do dpkg -x "$d" /tmp/q72/root; done
#   QEMU72=/tmp/q72/root/usr/bin/qemu-system-x86_64 tests/unit/qstream/record.sh
# It loads its TCG module from that tree (QEMU_MODULE_DIR) and its firmware
# from 10.0's /usr/share/qemu (-L), which works for a -kernel boot of the pc
# machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
guest=${NC_GUEST_DIR:-$root/build/guest}
out=${NC_QSTREAM_OUT:-$root/tests/data/qstream}

die() { echo "record.sh: $*" >&2; exit 1; }

# The QEMU and temporary folder of the recording under way, removed on any
# exit (die included).
cur_pid= cur_tmp=
cleanup() {
  [[ -z $cur_pid ]] || kill "$cur_pid" 2>/dev/null || true
  [[ -z $cur_pid ]] || wait "$cur_pid" 2>/dev/null || true
  [[ -z $cur_tmp ]] || rm -rf "$cur_tmp"
  cur_pid= cur_tmp=
}
trap cleanup EXIT

# qmp FD_IN FD_OUT JSON: sends one command, returns its reply line (skips events).
qmp() {
  local line
  printf '%s\n' "$3" >&"$1"
  while IFS= read -r -t 30 line <&"$2"; do
    case $line in
      *'"return"'* | *'"error"'*) printf '%s\n' "$line"; return 0 ;;
    esac
  done
  die "no QMP reply to $3"
}

record_one() {
  local name=$1 qemu=$2 mem=$3 knobs=$4 settle=$5 base=${6:--}
  local tmp; tmp=$(mktemp -d /tmp/nc-qs-rec.XXXXXX)
  cur_tmp=$tmp
  local stream=$tmp/stream.bin log=$tmp/console.log sock=$tmp/qmp.sock
  local extra=() modules=
  if [[ $qemu != /usr/bin/* ]]; then
    # An unpacked QEMU: its own modules (accel-tcg-x86_64.so), 10.0's firmware.
    extra=(-L /usr/share/qemu -L /usr/share/seabios)
    modules=$(cd "$(dirname "$qemu")/.." && pwd)/lib/x86_64-linux-gnu/qemu
  fi
  QEMU_MODULE_DIR=$modules "$qemu" "${extra[@]}" -accel tcg -machine pc -m "$mem" -nodefaults -no-user-config \
    -display none -kernel "$guest/vmlinux" -initrd "$guest/initramfs.cpio.gz" \
    -append "console=ttyS0 quiet panic=-1 $knobs" -serial "file:$log" \
    -qmp "unix:$sock,server=on,wait=off" >"$tmp/qemu.out" 2>&1 &
  local qpid=$!
  cur_pid=$qpid
  local i
  for ((i = 0; i < 600; i++)); do
    grep -q NCREADY "$log" 2>/dev/null && break
    kill -0 "$qpid" 2>/dev/null || die "$name: QEMU exited: $(cat "$tmp/qemu.out")"
    sleep 0.1
  done
  grep -q NCREADY "$log" || die "$name: no NCREADY within 60 s"
  sleep "$settle"

  coproc QMP { socat - "UNIX-CONNECT:$sock"; }
  local in=${QMP[1]} outfd=${QMP[0]} reply
  read -r -t 10 reply <&"$outfd" || die "$name: no QMP greeting"
  qmp "$in" "$outfd" '{"execute":"qmp_capabilities"}' >/dev/null
  reply=$(qmp "$in" "$outfd" '{"execute":"migrate","arguments":{"uri":"exec:cat > '"$stream"'"}}')
  [[ $reply == *'"return"'* ]] || die "$name: migrate: $reply"
  local status=""
  for ((i = 0; i < 1200; i++)); do
    reply=$(qmp "$in" "$outfd" '{"execute":"query-migrate"}')
    status=$(jq -r '.return.status // empty' <<<"$reply")
    [[ $status == completed || $status == failed || $status == cancelled ]] && break
    sleep 0.1
  done
  [[ $status == completed ]] || die "$name: migration $status: $reply"
  local ram; ram=$(jq -c '.return.ram | {transferred, normal, duplicate, "dirty-sync-count"}' <<<"$reply")
  qmp "$in" "$outfd" '{"execute":"quit"}' >/dev/null || true
  exec {in}>&-
  wait "$qpid" 2>/dev/null || true
  cur_pid=
  local zopts=(-q -19 --long=27 --single-thread -f)
  if [[ $base != - ]]; then
    grep -q "^$base - " "$out/streams.txt" 2>/dev/null || die "$name: base $base is not a recorded stream without a base"
    zstd -q -d --long=31 -f "$out/$base.qstream.zst" -o "$tmp/base.bin"
    zopts+=(--patch-from="$tmp/base.bin")
  fi
  zstd "${zopts[@]}" "$stream" -o "$out/$name.qstream.zst"
  chmod 644 "$out/$name.qstream.zst"
  local ver; ver=$("$qemu" --version | head -1 | awk '{print $4}')
  local line
  line="$name $base $ver $(stat -c %s "$stream") $(jq -r '"\(.normal) \(.duplicate) \(."dirty-sync-count")"' <<<"$ram") $knobs"
  [[ -s $out/streams.txt ]] ||
    echo "# name base qemu raw-bytes normal duplicate dirty-sync-count knobs (record.sh)" >"$out/streams.txt"
  grep -v "^$name " "$out/streams.txt" >"$tmp/streams.txt" || true
  printf '%s\n' "$line" >>"$tmp/streams.txt"
  cp "$tmp/streams.txt" "$out/streams.txt"
  printf '%s  (zst %s bytes)\n' "$line" "$(stat -c %s "$out/$name.qstream.zst")"
  cleanup
}

[[ -f $guest/vmlinux && -f $guest/initramfs.cpio.gz ]] || die "no guest image in $guest (scripts/build-guest-image)"
mkdir -p "$out"
if [[ $# -gt 0 ]]; then
  [[ $# -eq 5 || $# -eq 6 ]] || die "usage: record.sh [NAME QEMU MEM KNOBS SETTLE_S [BASE]]"
  record_one "$@"
  exit 0
fi
q10=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 not found"
record_one q10-idle "$q10" 128M "nc.dirty_mib=1 nc.rate_mib=0" 1
record_one q10-compressible "$q10" 128M "nc.dirty_mib=16 nc.rate_mib=20 nc.pattern=compressible" 2 q10-idle
record_one q10-random "$q10" 128M "nc.dirty_mib=1 nc.rate_mib=2 nc.pattern=random" 2 q10-idle
if [[ -n ${QEMU72:-} && -x $QEMU72 ]]; then
  record_one q72-compressible "$QEMU72" 128M "nc.dirty_mib=8 nc.rate_mib=10 nc.pattern=compressible" 2 q10-idle
else
  echo "record.sh: QEMU72 not set: no QEMU 7.2 stream recorded" >&2
fi
