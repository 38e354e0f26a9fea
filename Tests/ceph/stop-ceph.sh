#!/usr/bin/env bash
# Stops the daemons `start-ceph.sh DIR` started, by the pids it recorded (a pid is signalled only
# while its /proc/PID/cmdline still names DIR/ceph.conf, so a reused pid is left alone), SIGTERM
# then SIGKILL after 10 s. With --remove, DIR goes too.
#
#   stop-ceph.sh DIR [--remove]
set -uo pipefail
dir=${1:-}
[ -n "$dir" ] || { echo "usage: $0 DIR [--remove]" >&2; exit 64; }
[ -d "$dir" ] || exit 0
dir=$(cd "$dir" && pwd)

ours() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF -- "$dir/ceph.conf"; }

pids=()
# The gateway first, the monitor last: the others report to it as they go.
for name in rgw.ci osd.0 mgr.x mon.a; do
    file=$dir/pids/$name
    [ -f "$file" ] || continue
    pid=$(cat "$file")
    if ours "$pid"; then
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
    rm -f "$file"
done
deadline=$((SECONDS + 10))
for pid in "${pids[@]}"; do
    while ours "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    ours "$pid" && kill -KILL "$pid" 2>/dev/null
done
[ "${2:-}" = --remove ] && rm -rf "$dir"
exit 0
