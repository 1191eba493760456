#!/usr/bin/env bash
# What an install puts under its prefix for mounting: sbin/mount.fuse.kdnfs and
# lib/systemd/system/kdnfs@.service name the kdnfs of that prefix (also for `cmake --install
# --prefix P`), the unit passes `systemd-analyze verify`, and the example mount unit is in
# share/doc/kdn/examples/.
#   install_mount_files_test.sh BUILD_DIR
set -euo pipefail
build=$1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kdn-install-mount.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
p=$tmp/prefix
# fs/kdnfs's install rules only: what `cmake --install BUILD_DIR --prefix P` runs for them.
cmake -DCMAKE_INSTALL_PREFIX="$p" -P "$build/fs/kdnfs/cmake_install.cmake" >/dev/null

fail() { echo "install_mount_files_test: $*" >&2; exit 1; }
[ -x "$p/sbin/mount.fuse.kdnfs" ] || fail "no executable sbin/mount.fuse.kdnfs"
grep -qxF "kdnfs='$p/bin/kdnfs'" "$p/sbin/mount.fuse.kdnfs" ||
  fail "mount.fuse.kdnfs does not run $p/bin/kdnfs"
unit=$p/lib/systemd/system/kdnfs@.service
[ -f "$unit" ] || fail "no lib/systemd/system/kdnfs@.service"
grep -q "^ExecStart=$p/bin/kdnfs -f " "$unit" || fail "the unit does not run $p/bin/kdnfs -f"
[ -f "$p/share/doc/kdn/examples/kdn.mount" ] || fail "no share/doc/kdn/examples/kdn.mount"

if command -v systemd-analyze >/dev/null; then
  cp "$unit" "$tmp/kdnfs@kdn.service"
  out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$tmp/kdnfs@kdn.service" 2>&1) ||
    fail "systemd-analyze verify: $out"
  case $out in *kdnfs@kdn.service*) fail "systemd-analyze verify: $out" ;; esac
elif [ "${CI:-}" = true ]; then
  fail "systemd-analyze is required under CI=true (apt: systemd)"
else
  echo "skipped systemd-analyze verify: systemd-analyze is not installed (apt: systemd)"
fi
echo "mount.fuse.kdnfs, kdnfs@.service and kdn.mount are installed and name $p/bin/kdnfs"
