#!/usr/bin/env bash
# Builds cairn_VERSION_ARCH.deb into OUTDIR (default: .build/deb): the cairn binary with the Swift
# standard library linked in (it runs on a host without Swift), its man page, bash/zsh/fish
# completions, the systemd units, an example group file and the docs.
#
#   Packaging/build-deb.sh [OUTDIR]
#
# The man page comes from swift-argument-parser's generate-manual plugin (offline: it builds from
# the package's own checkout), run on the debug build `swift test` already made.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=${1:-$repo/.build/deb}
mkdir -p "$out"
out=$(cd "$out" && pwd)

version=$(sed -n 's/^ *version: "\([0-9][0-9.]*\)",$/\1/p' Sources/cairn/Cairn.swift | head -1)
[ -n "$version" ] || { echo "build-deb: no version in Sources/cairn/Cairn.swift" >&2; exit 1; }
arch=$(dpkg --print-architecture)

# 1. The binary: release, Swift runtime static. Only Debian's own libraries may remain dynamic.
start=$(date +%s)
swift build -c release --static-swift-stdlib --product cairn
bin="$(swift build -c release --static-swift-stdlib --show-bin-path)/cairn"
echo "build-deb: release build took $(( $(date +%s) - start )) s"
if ldd "$bin" | grep -E 'libswift|libFoundation|libdispatch|libBlocksRuntime|/opt/swift' >&2; then
    echo "build-deb: $bin still links the Swift runtime dynamically (above)" >&2
    exit 1
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
install -D -m 0755 "$bin" "$root/usr/bin/cairn"
# Debug info only; the symbol table stays so Swift's crash backtraces keep their function names.
strip --strip-debug "$root/usr/bin/cairn"

# 2. The man page, generated from the argument parser.
# Dated by the last commit (or SOURCE_DATE_EPOCH), not the build day: the same sources make the same page.
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
    manual_date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)
else
    manual_date=$(git log -1 --format=%cs 2>/dev/null || date -u +%Y-%m-%d)
fi
swift package plugin generate-manual --authors "The Cairn authors" --date "$manual_date" >&2
page=$(find .build/plugins/GenerateManual/outputs -name cairn.1 | head -1)
[ -s "$page" ] || { echo "build-deb: generate-manual made no cairn.1" >&2; exit 1; }
install -D -m 0644 "$page" "$root/usr/share/man/man1/cairn.1"
gzip -9n "$root/usr/share/man/man1/cairn.1"

# 3. Shell completions, from the binary itself.
"$root/usr/bin/cairn" --generate-completion-script bash > "$stage/cairn.bash"
"$root/usr/bin/cairn" --generate-completion-script zsh > "$stage/_cairn"
"$root/usr/bin/cairn" --generate-completion-script fish > "$stage/cairn.fish"
install -D -m 0644 "$stage/cairn.bash" "$root/usr/share/bash-completion/completions/cairn"
install -D -m 0644 "$stage/_cairn" "$root/usr/share/zsh/vendor-completions/_cairn"
install -D -m 0644 "$stage/cairn.fish" "$root/usr/share/fish/vendor_completions.d/cairn.fish"

# 4. systemd units (Debian 12's systemd reads /lib/systemd/system), the example group file, docs.
for unit in Packaging/systemd/*.service Packaging/systemd/*.timer; do
    install -D -m 0644 "$unit" "$root/lib/systemd/system/$(basename "$unit")"
done
install -D -m 0644 Packaging/GROUP.conf.example "$root/usr/share/doc/cairn/examples/GROUP.conf"
install -D -m 0644 Packaging/verify.conf.example "$root/usr/share/doc/cairn/examples/verify.conf"
for doc in README.md docs/*.md; do
    install -D -m 0644 "$doc" "$root/usr/share/doc/cairn/$(basename "$doc")"
done
install -d -m 0755 "$root/etc/cairn"
{
    echo "Cairn $version, built from the repository's own sources."
    echo "It links zstd, OpenSSL's libcrypto, zlib and libxml2 from Debian; the Swift runtime is linked in."
} > "$root/usr/share/doc/cairn/copyright"

# 5. Dependencies, from the ELF's NEEDED entries through Debian's shlibs (dpkg-shlibdeps).
mkdir -p "$stage/debian"
echo "Source: cairn" > "$stage/debian/control"
depends=$(cd "$stage" && dpkg-shlibdeps -O -e"$root/usr/bin/cairn" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "build-deb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
for lib in $(objdump -p "$root/usr/bin/cairn" | awk '/NEEDED/ { print $2 }'); do
    case $lib in
        libzstd.so.*|libcrypto.so.*|libz.so.*|libxml2.so.*|libstdc++.so.*|libgcc_s.so.*|libc.so.*|libm.so.*|ld-linux*) ;;
        *) echo "build-deb: unexpected shared library $lib" >&2; exit 1 ;;
    esac
done

size=$(du -sk "$root" | cut -f1)
mkdir -p "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<CONTROL
Package: cairn
Version: $version
Architecture: $arch
Maintainer: The Cairn authors <cairn@localhost>
Installed-Size: $size
Depends: $depends
Recommends: qemu-utils
Suggests: prometheus-node-exporter, libvirt-clients
Section: admin
Priority: optional
Homepage: file:///usr/share/doc/cairn/README.md
Description: deduplicating backups and restore points for VM disks
 Cairn backs up raw, qcow2 and VMDK disks and NBD exports into a
 deduplicating, compressed repository of restore points, restores them bit
 for bit, verifies them, and serves them over NBD. systemd timers run a
 nightly backup per group (cairn-backup@GROUP.timer) and a weekly verify.
CONTROL

deb="$out/cairn_${version}_${arch}.deb"
dpkg-deb --build --root-owner-group -Zxz "$root" "$deb" >&2
echo "build-deb: $deb ($(stat -c %s "$deb") bytes; binary $(stat -c %s "$root/usr/bin/cairn") bytes, unstripped $(stat -c %s "$bin") bytes)" >&2
echo "$deb"
