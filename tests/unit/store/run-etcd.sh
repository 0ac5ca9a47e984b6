#!/usr/bin/env bash
# Runs a test binary against a fresh local etcd cluster:
#
#   run-etcd.sh MEMBERS BASE_PORT COMMAND [ARGS...]
#
# Starts MEMBERS (1 or 3) etcd members on 127.0.0.1 from BASE_PORT up with
# scripts/etcd-cluster in a temporary directory, runs COMMAND with
# NC_STORE_URI (etcd:http://...), NC_ETCD_CLUSTER (the script) and
# NC_ETCD_CLUSTER_DIR set, then stops the cluster and removes the directory
# whatever happened. Exits with COMMAND's status, or 77 (skipped) when etcd
# is not installed.
set -euo pipefail

if [ $# -lt 3 ]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
  exit 2
fi
if ! command -v etcd >/dev/null 2>&1; then
  echo "SKIP: etcd is not installed (apt-get install etcd-server etcd-client)"
  exit 77
fi
members=$1 port=$2
shift 2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cluster=$(cd "$here/../../../scripts" && pwd)/etcd-cluster

dir=$(mktemp -d /tmp/nc-etcd-test-XXXXXX)
# shellcheck disable=SC2317 # called by the trap
cleanup() {
  "$cluster" stop "$dir" || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

t0=$SECONDS
uri=$("$cluster" start "$dir" -n "$members" -p "$port")
echo "# etcd cluster of $members up in $((SECONDS - t0)) s: $uri"
status=0
NC_STORE_URI=$uri NC_ETCD_CLUSTER=$cluster NC_ETCD_CLUSTER_DIR=$dir "$@" || status=$?
exit $status
