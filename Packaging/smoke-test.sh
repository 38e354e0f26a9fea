#!/usr/bin/env bash
# After `apt-get install ./cairn_*.deb`: the installed /usr/bin/cairn backs up, restores and
# verifies a qcow2 disk with nothing but the system's libraries (the environment emptied, so no
# toolchain path or LD_LIBRARY_PATH reaches it); the restore is judged by qemu-img compare and
# cmp; the installed units pass systemd-analyze verify; the metrics file passes promtool.
set -euo pipefail
fail() { echo "smoke-test: $*" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Everything cairn runs with: no PATH into /opt/swift, no library path.
clean() { env -i PATH=/usr/bin:/bin HOME="$work" LANG=C.UTF-8 "$@"; }

[ -x /usr/bin/cairn ] || fail "/usr/bin/cairn is not installed"
if ldd /usr/bin/cairn | grep -E 'libswift|libFoundation|libdispatch|/opt/swift'; then
    fail "/usr/bin/cairn needs the Swift toolchain's libraries (above)"
fi
clean /usr/bin/cairn --version

# A sparse 64 MiB qcow2 disk with data at both ends and a hole between.
qemu-img create -q -f qcow2 "$work/vm1.qcow2" 64M
qemu-io -f qcow2 -c 'write -q -P 0x5a 0 3M' -c 'write -q -P 0x17 60M 1M' "$work/vm1.qcow2" >/dev/null

repo=$work/repo
prom=$work/cairn.prom
clean /usr/bin/cairn init --repo "$repo" >/dev/null
out=$(clean /usr/bin/cairn backup --repo "$repo" --group vm1 --quiet --metrics-file "$prom" "$work/vm1.qcow2")
[ -z "$out" ] || fail "backup --quiet printed: $out"
clean /usr/bin/cairn restore --repo "$repo" vm1@latest --to "$work/vm1.raw"
qemu-img compare -q -f qcow2 -F raw "$work/vm1.qcow2" "$work/vm1.raw" || fail "the restore differs (qemu-img compare)"
qemu-img convert -f qcow2 -O raw "$work/vm1.qcow2" "$work/expected.raw"
cmp "$work/expected.raw" "$work/vm1.raw" || fail "the restore differs (cmp)"
clean /usr/bin/cairn restore --repo "$repo" vm1@latest --to "$work/vm1-copy.qcow2" --format qcow2 --quiet
qemu-img compare -q "$work/vm1.qcow2" "$work/vm1-copy.qcow2" || fail "the qcow2 restore differs"
clean env CAIRN_METRICS_FILE="$prom" /usr/bin/cairn verify --repo "$repo" --quiet
clean /usr/bin/cairn status --repo "$repo" --max-age 1h --json >/dev/null

# The metrics: both commands present, in a form Prometheus takes.
grep -q 'cairn_last_success_timestamp_seconds{command="backup",group="vm1"' "$prom" || fail "no backup metrics"
grep -q 'cairn_last_exit_code{command="verify",group=""' "$prom" || fail "no verify metrics"
promtool check metrics < "$prom" || fail "promtool rejects the metrics file"

# What the package ships beside the binary.
man -w cairn >/dev/null || fail "no man page"
for f in /usr/share/bash-completion/completions/cairn /usr/share/zsh/vendor-completions/_cairn \
    /usr/share/fish/vendor_completions.d/cairn.fish /usr/share/doc/cairn/examples/GROUP.conf; do
    [ -s "$f" ] || fail "$f is missing"
done
bash -n /usr/share/bash-completion/completions/cairn || fail "the bash completion does not parse"
analysis=$(systemd-analyze verify cairn-backup@vm1.service cairn-backup@vm1.timer cairn-verify.service \
    cairn-verify.timer 2>&1) || fail "systemd-analyze verify failed: $analysis"
[ -z "$analysis" ] || fail "systemd-analyze verify: $analysis"
echo "smoke-test: the installed cairn backs up, restores and verifies; units and metrics check out"
