#!/usr/bin/env bash
# Starts a throw-away one-node Ceph (a monitor, a manager, one memstore OSD and radosgw on a
# loopback port) in DIR, for the S3 tests, and makes an S3 user.
#
#   start-ceph.sh DIR [RGW_PORT] [MON_PORT]
#
# Installs nothing (the packages: ceph-mon ceph-mgr ceph-osd radosgw ceph-common). Runs as root,
# without systemd. On success it writes DIR/env (shell `export` lines: CAIRN_TEST_S3_ENDPOINT,
# CAIRN_TEST_S3_ACCESS_KEY, CAIRN_TEST_S3_SECRET_KEY, CAIRN_TEST_S3_REGION, and
# CAIRN_TEST_CEPH_DIR for rgw-ctl.sh), prints the same
# lines, then the elapsed time and each daemon's RSS, and exits 0. Exit 2 with a reason when it
# cannot start; what it did start is stopped again. `stop-ceph.sh DIR` ends the daemons.
#
# Every choice here follows /work/shared/research/ceph-on-debian12.md and object-store.md §5.8
# (checked on this machine kind), including its pitfalls:
# - msgr v2 only on 127.0.0.1; pool size 1 allowed; 8 PGs, autoscale off; chooseleaf type 0;
# - paxos_propose_interval 0.1 s (each pool radosgw-admin makes waits for a map commit: 14 s -> 4 s);
# - `ceph-mon --mkfs` exits 0 even when it refused: mon.a/store.db is checked;
# - admin_socket only in daemon sections; `-c DIR/ceph.conf` everywhere, CEPH_ARGS/CEPH_CONF unset;
# - daemons start under setsid with stdin from /dev/null and output to a log, so a caller's
#   `$(...)` or pipe does not wait for them;
# - ports outside the ephemeral range and away from 6800-7300 (the OSD's and manager's);
# - memstore: the fastest OSD; data lives in RAM (about twice its size), 4 GiB reported.
set -uo pipefail
unset CEPH_ARGS CEPH_CONF
# The daemons must keep no descriptor of the caller's: a test runner that waits for this script
# through a pipe would otherwise wait as long as they run.
for fd in /proc/$$/fd/*; do
    n=${fd##*/}
    [ "$n" -gt 2 ] 2>/dev/null && eval "exec $n>&-" 2>/dev/null
done

dir=${1:-}
rgw_port=${2:-17480}
mon_port=${3:-13300}
[ -n "$dir" ] || { echo "usage: $0 DIR [RGW_PORT] [MON_PORT]" >&2; exit 64; }
start=$(date +%s.%N)

fail() {
    echo "start-ceph: $*" >&2
    for log in "$dir"/log/*.log; do
        [ -s "$log" ] && { echo "--- last lines of $log" >&2; tail -n 15 "$log" >&2; }
    done
    bash "$(dirname "$0")/stop-ceph.sh" "$dir" >/dev/null 2>&1
    exit 2
}

for tool in ceph-mon ceph-mgr ceph-osd radosgw ceph ceph-authtool monmaptool radosgw-admin curl; do
    command -v "$tool" >/dev/null || { echo "start-ceph: $tool is not installed (apt-get install ceph-mon ceph-mgr ceph-osd radosgw ceph-common curl)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "start-ceph: not root" >&2; exit 2; }
for port in "$rgw_port" "$mon_port"; do
    if ss -ltnH "sport = :$port" | grep -q .; then
        echo "start-ceph: port $port is in use (pass other ports)" >&2
        exit 2
    fi
done
if [ -e "$dir/ceph.conf" ]; then
    echo "start-ceph: $dir already holds a cluster (stop-ceph.sh $dir --remove first)" >&2
    exit 2
fi
mkdir -p "$dir"/{log,run,pids,mon.a,mgr.x,osd.0,rgw} || exit 2
dir=$(cd "$dir" && pwd)
conf=$dir/ceph.conf
fsid=$(cat /proc/sys/kernel/random/uuid)

cat >"$conf" <<CONF
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:$mon_port]
public_addr = 127.0.0.1
ms_bind_msgr1 = false
ms_bind_msgr2 = true
run_dir = $dir/run
log_file = $dir/log/\$name.log
auth_allow_insecure_global_id_reclaim = false
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_max_pg_per_osd = 1000
osd_crush_chooseleaf_type = 0
mon_data_avail_warn = 2
mon_data_avail_crit = 1
paxos_propose_interval = 0.1
osd_objectstore = memstore
memstore_device_bytes = 4294967296
osd_memory_target = 1073741824

[client]
keyring = $dir/admin.keyring

[mon]
mon_data = $dir/mon.\$id
admin_socket = $dir/run/\$name.asok

[mgr]
mgr_data = $dir/mgr.\$id
admin_socket = $dir/run/\$name.asok

[osd]
osd_data = $dir/osd.\$id
admin_socket = $dir/run/\$name.asok

[client.rgw.ci]
keyring = $dir/rgw/keyring
rgw_data = $dir/rgw
admin_socket = $dir/run/\$name.asok
rgw_frontends = beast endpoint=127.0.0.1:$rgw_port tcp_nodelay=1
CONF

# A misspelt option does not stop a daemon: read two back.
[ "$(ceph-conf -c "$conf" --name osd.0 --lookup osd_objectstore)" = memstore ] || fail "ceph.conf: osd_objectstore not read back"
[ "$(ceph-conf -c "$conf" --name mon.a --lookup paxos_propose_interval)" = 0.1 ] || fail "ceph.conf: paxos_propose_interval not read back"

ceph_cmd() { timeout 30 ceph -c "$conf" --connect-timeout 10 "$@"; }

# Starts a daemon in the foreground of its own session; its pid is the one `$!` names, since a
# background job is no process group leader and setsid does not fork then.
launch() {
    local name=$1
    shift
    setsid "$@" -f -c "$conf" </dev/null >>"$dir/log/$name.stdout" 2>&1 &
    echo $! >"$dir/pids/$name"
}

wait_for() {
    local what=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || fail "$what did not happen within $seconds s"
        sleep 0.1
    done
}

# Keyrings, monitor map, monitor.
ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null || fail "mon keyring"
ceph-authtool --create-keyring "$dir/admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null || fail "admin keyring"
ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/admin.keyring" >/dev/null || fail "keyring import"
monmaptool --create --clobber --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" \
    --set-min-mon-release pacific --enable-all-features "$dir/monmap" >/dev/null || fail "monmaptool"
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring" >>"$dir/log/mkfs.log" 2>&1
[ -d "$dir/mon.a/store.db" ] || fail "ceph-mon --mkfs made no store (see $dir/log/mkfs.log)"
launch mon.a ceph-mon -i a
wait_for "the monitor answering" 30 ceph_cmd mon stat

# Manager (PG statistics, so the wait below can see PGs active).
ceph_cmd auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' -o "$dir/mgr.x/keyring" >/dev/null || fail "mgr key"
launch mgr.x ceph-mgr -i x

# One OSD.
osd_uuid=$(cat /proc/sys/kernel/random/uuid)
osd_secret=$(ceph-authtool --gen-print-key)
osd_id=$(echo "{\"cephx_secret\": \"$osd_secret\"}" | ceph_cmd osd new "$osd_uuid" -i -) || fail "ceph osd new"
[ "$osd_id" = 0 ] || fail "ceph osd new gave id '$osd_id', not 0"
# `--mkfs --key` does not write the key for memstore: the keyring is written here, as vstart.sh does.
printf '[osd.0]\n\tkey = %s\n' "$osd_secret" >"$dir/osd.0/keyring"
ceph-osd -c "$conf" -i 0 --mkfs --key "$osd_secret" --osd-uuid "$osd_uuid" >>"$dir/log/mkfs.log" 2>&1 || fail "ceph-osd --mkfs"
launch osd.0 ceph-osd -i 0
wait_for "the OSD up" 60 bash -c "ceph -c '$conf' --connect-timeout 10 osd stat | grep -q '1 up'"

# The gateway and its user (radosgw-admin makes the zone's pools, so it runs once the OSD is up).
ceph_cmd auth get-or-create client.rgw.ci mon 'allow rw' osd 'allow rwx' mgr 'allow rw' -o "$dir/rgw/keyring" >/dev/null || fail "rgw key"
access_key=CAIRN$(head -c 4096 /dev/urandom | tr -dc 'A-Z0-9' | head -c 15)
secret_key=$(head -c 4096 /dev/urandom | tr -dc 'A-Za-z0-9' | head -c 40)
[ ${#access_key} = 20 ] && [ ${#secret_key} = 40 ] || fail "could not make keys"
timeout 120 radosgw-admin -c "$conf" user create --uid cairn-test --display-name "Cairn tests" \
    --access-key "$access_key" --secret-key "$secret_key" >>"$dir/log/radosgw-admin.log" 2>&1 || fail "radosgw-admin user create"
launch rgw.ci radosgw -n client.rgw.ci
wait_for "radosgw answering on 127.0.0.1:$rgw_port" 60 \
    bash -c "curl -s --max-time 2 http://127.0.0.1:$rgw_port/ | grep -q ListAllMyBucketsResult"

endpoint=http://127.0.0.1:$rgw_port
cat >"$dir/env" <<ENV
export CAIRN_TEST_S3_ENDPOINT=$endpoint
export CAIRN_TEST_S3_ACCESS_KEY=$access_key
export CAIRN_TEST_S3_SECRET_KEY=$secret_key
export CAIRN_TEST_S3_REGION=us-east-1
export CAIRN_TEST_CEPH_DIR=$dir
ENV
cat "$dir/env"
echo "start-ceph: S3 answers at $endpoint after $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $start }") s"
for name in mon.a mgr.x osd.0 rgw.ci; do
    echo "start-ceph: $name pid $(cat "$dir/pids/$name") rss $(ps -o rss= -p "$(cat "$dir/pids/$name")" | tr -d ' ') KiB"
done
