#!/usr/bin/env bash
# Stops or starts again the radosgw of a cluster that start-ceph.sh started in DIR, for tests of
# a gateway restart in the middle of a run (objects survive it; a restart takes under 1 s).
#
#   rgw-ctl.sh stop DIR     SIGTERM to the recorded pid (only while it names DIR/ceph.conf), then
#                           waits until it is gone (SIGKILL after 10 s)
#   rgw-ctl.sh start DIR    starts it as start-ceph.sh did and waits until it answers S3
set -uo pipefail
unset CEPH_ARGS CEPH_CONF
# The daemons must keep no descriptor of the caller's: a test runner that waits for this script
# through a pipe would otherwise wait as long as they run.
for fd in /proc/$$/fd/*; do
    n=${fd##*/}
    [ "$n" -gt 2 ] 2>/dev/null && eval "exec $n>&-" 2>/dev/null
done
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -d "$dir" ] || { echo "usage: $0 stop|start DIR" >&2; exit 64; }
dir=$(cd "$dir" && pwd)
conf=$dir/ceph.conf
source "$dir/env"
ours() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF -- "$conf"; }

case "$cmd" in
stop)
    pid=$(cat "$dir/pids/rgw.ci" 2>/dev/null) || exit 0
    ours "$pid" && kill -TERM "$pid"
    deadline=$((SECONDS + 10))
    while ours "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    ours "$pid" && kill -KILL "$pid"
    rm -f "$dir/pids/rgw.ci"
    ;;
start)
    setsid radosgw -n client.rgw.ci -f -c "$conf" </dev/null >>"$dir/log/rgw.ci.stdout" 2>&1 &
    echo $! >"$dir/pids/rgw.ci"
    deadline=$((SECONDS + 30))
    until curl -s --max-time 2 "$CAIRN_TEST_S3_ENDPOINT/" | grep -q ListAllMyBucketsResult; do
        [ $SECONDS -lt $deadline ] || { echo "rgw-ctl: radosgw did not answer within 30 s" >&2; exit 2; }
        sleep 0.1
    done
    ;;
*)
    echo "usage: $0 stop|start DIR" >&2
    exit 64
    ;;
esac
