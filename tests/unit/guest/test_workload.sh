#!/usr/bin/env bash
# Runs nc-workload on the host (arguments stand in for the kernel command
# line) and checks its console protocol, its pacing and that the integrity
# checker catches a corrupted page.
set -uo pipefail
WL=${1:?usage: test_workload.sh PATH_TO_WORKLOAD}
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# expect_rc WANT GOT WHAT
expect_rc() { [ "$1" = "$2" ] || fail "$3: exit status $2, want $1"; }

# 1. Compressible, 20 MiB/s for 2 s: ready line, ok heartbeats, paced rate.
out=$("$WL" nc.dirty_mib=4 nc.rate_mib=20 nc.hb_ms=100 nc.run_s=2)
expect_rc 0 $? "compressible run"
first=$(sed -n 1p <<<"$out")
[ "$first" = "NCREADY dirty_mib=4 rate_mib=20 pattern=compressible" ] ||
	fail "first line is '$first', want the NCREADY line"
hb_re='^NCHB seq=[0-9]+ t_ms=[0-9]+ dirtied_mib=[0-9]+ mem=(ok|BAD) verified=[0-9]+$'
bad_lines=$(grep -v '^NCREADY' <<<"$out" | grep -cvE "$hb_re")
[ "$bad_lines" = 0 ] || fail "$bad_lines lines are not heartbeats: $(grep -vE "$hb_re" <<<"$out" | head -3)"
n_hb=$(grep -c '^NCHB' <<<"$out")
[ "$n_hb" -ge 15 ] && [ "$n_hb" -le 22 ] || fail "$n_hb heartbeats in 2 s at 100 ms, want 15..22"
grep -q 'mem=BAD' <<<"$out" && fail "mem=BAD without corruption"
last=$(grep '^NCHB' <<<"$out" | tail -1)
dirtied=$(sed -E 's/.*dirtied_mib=([0-9]+).*/\1/' <<<"$last")
[ "$dirtied" -ge 30 ] && [ "$dirtied" -le 42 ] || fail "dirtied $dirtied MiB in 2 s at 20 MiB/s, want 30..42"
verified=$(sed -E 's/.*verified=([0-9]+).*/\1/' <<<"$last")
# 4 MiB = 1024 pages, swept once per second.
[ "$verified" -ge 1500 ] || fail "verified $verified pages in 2 s, want >= 1500 (one sweep of 1024 a second)"
seqs=$(grep -oE 'seq=[0-9]+' <<<"$out" | cut -d= -f2 | tr '\n' ' ')
[ "$seqs" = "$(seq 0 $((n_hb - 1)) | tr '\n' ' ')" ] || fail "seq numbers not 0,1,2,...: $seqs"

# 2. Random pattern with a deliberately corrupted page.
out=$("$WL" nc.dirty_mib=4 nc.rate_mib=20 nc.pattern=random nc.selftest_corrupt=1 nc.hb_ms=100 nc.run_s=3)
expect_rc 1 $? "corrupted run"
grep -q '^NCREADY dirty_mib=4 rate_mib=20 pattern=random$' <<<"$out" || fail "no random NCREADY line"
page=$(sed -nE 's/^NCSELFTEST corrupted page=([0-9]+)$/\1/p' <<<"$out")
[ -n "$page" ] || fail "no NCSELFTEST line"
grep -qx "NCMEMBAD page=$page" <<<"$out" || fail "corrupted page $page not reported as NCMEMBAD"
[ "$(grep -c '^NCMEMBAD' <<<"$out")" = 1 ] || fail "want exactly one NCMEMBAD line: $(grep NCMEMBAD <<<"$out")"
grep '^NCHB' <<<"$out" | tail -1 | grep -q 'mem=BAD' || fail "last heartbeat does not say mem=BAD"
awk '/^NCMEMBAD/{b=1} /^NCHB/ && b && /mem=ok/{exit 1}' <<<"$out" || fail "mem=ok after NCMEMBAD"

# 3. Bad parameters are refused with a message.
out=$("$WL" nc.dirty_mib=12X)
expect_rc 2 $? "nc.dirty_mib=12X"
grep -q '^NCERROR nc.dirty_mib="12X"' <<<"$out" || fail "no NCERROR for nc.dirty_mib=12X: $out"
out=$("$WL" nc.pattern=zeros)
expect_rc 2 $? "nc.pattern=zeros"
grep -q '^NCERROR nc.pattern="zeros"' <<<"$out" || fail "no NCERROR for nc.pattern=zeros: $out"
out=$("$WL" nc.colour=blue nc.run_s=1 nc.hb_ms=1000)
expect_rc 0 $? "unknown knob"
grep -q '^NCWARN unknown parameter nc.colour' <<<"$out" || fail "no NCWARN for nc.colour: $out"

[ "$fails" = 0 ] && echo "guest workload: all checks passed"
exit $((fails > 0))
