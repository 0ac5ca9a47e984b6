#!/usr/bin/env bash
# The harness leaves nothing behind: no namespace, no device in the root
# namespace, no process, no scratch file. A child test shell builds a
# small network (veth + tbf, an emulated link, a process inside a
# namespace) and then ends four ways: a normal exit (with netns_cleanup
# called twice: idempotent), a failure, SIGTERM, and SIGKILL, after which
# nc-linkem must exit by itself and netns_sweep_stale must remove the rest.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
netns_init
netns_sweep_stale

links_before=$(ip -o link show | awk -F': ' '{print $2}' | sort)
work=$(mktemp -d /tmp/ncnt-cleanup.XXXXXX)
trap 'rm -rf "$work"; netns_cleanup' EXIT

# The child: $1 = exit | fail | term | kill. Writes its pids to $2.
cat >"$work/child.sh" <<'CHILD'
set -uo pipefail
. "$NETNS_LIB"
netns_init
A=$(netns_name a); B=$(netns_name b); C=$(netns_name c)
netns_create "$A"; netns_create "$B"; netns_create "$C"
netns_create "$A" # idempotent
link_veth "$A" "$C"
link_tbf "$A" "$LINK_DEV_A" 50
link_emulated "$A" "$B" --delay-ms 5 --rate-mbit 10
netns_bg "$B" sleep 300
echo "$$ $LINKEM_PID $NETNS_BG_PID" >"$2"
case $1 in
  exit) netns_cleanup; netns_cleanup; exit 0 ;;
  fail) netns_die "deliberate failure" ;;
  term|kill) wait "$NETNS_BG_PID" ;; # the sleep inside B
esac
CHILD

alive() { kill -0 "$1" 2>/dev/null; }

# check_clean HOW OWNER PIDS...
check_clean() {
  local how=$1 owner=$2 p
  shift 2
  local left
  left=$(ip netns list | awk '{print $1}' | grep "^ncnt-$owner-" || true)
  [ -z "$left" ] || netns_die "$how: namespaces left: $left"
  for p in "$@"; do alive "$p" && netns_die "$how: process $p still runs"; done
  local links_now
  links_now=$(ip -o link show | awk -F': ' '{print $2}' | sort)
  [ "$links_now" = "$links_before" ] ||
    netns_die "$how: root namespace devices changed: $(diff <(echo "$links_before") <(echo "$links_now") | tr '\n' ' ')"
  ls -d /tmp/ncnt-"$owner".* >/dev/null 2>&1 && netns_die "$how: scratch directory left: $(ls -d /tmp/ncnt-"$owner".*)"
  echo "$how: clean"
}

run_child() { # run_child MODE -> starts it, waits until its network is up
  rm -f "$work/pids"
  NETNS_LIB="$HERE/lib.sh" bash "$work/child.sh" "$1" "$work/pids" &
  child=$!
  local t
  for ((t = 0; t < 200; t++)); do
    [ -s "$work/pids" ] && break
    alive "$child" || break
    sleep 0.05
  done
  [ -s "$work/pids" ] || netns_die "$1: the child never built its network"
  read -r owner linkem sleeper <"$work/pids"
  ip netns list | grep -q "^ncnt-$owner-a" || [ "$1" != term ] || netns_die "$1: child namespaces missing"
}

for mode in exit fail; do
  run_child $mode
  wait "$child"
  rc=$?
  [ $mode = exit ] && [ $rc -ne 0 ] && netns_die "exit: the child failed (rc $rc)"
  [ $mode = fail ] && [ $rc -eq 0 ] && netns_die "fail: the child's failure was lost (rc 0)"
  check_clean $mode "$owner" "$linkem" "$sleeper"
done

run_child term
kill -TERM "$child"
wait "$child"
check_clean term "$owner" "$linkem" "$sleeper"

run_child kill
kill -KILL "$child"
{ wait "$child"; } 2>/dev/null
for ((t = 0; t < 40; t++)); do alive "$linkem" || break; sleep 0.05; done
alive "$linkem" && netns_die "kill: nc-linkem outlived its SIGKILLed parent"
netns_sweep_stale
check_clean "kill + sweep" "$owner" "$linkem" "$sleeper"
echo "PASS"
