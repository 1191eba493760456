#!/usr/bin/env bash
# Installs the build tree into a temporary prefix, builds examples/c/load_cache.c outside the tree
# against it (MODE pkgconfig: cc + pkg-config; MODE cmake: find_package(kdn) + kdn::kdn), runs it
# on a synthetic cache, and compares its output with the format library's export (and with the
# installed `kdnctl export`, when there is one).
#   install_test.sh BUILD_DIR SOURCE_DIR MAKE_TEST_CACHE MODE
set -euo pipefail
build=$1 src=$2 make_cache=$3 mode=$4
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kdn-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
"$make_cache" "$tmp/a.kv" "$tmp/ref.bin" 3 q4

case $mode in
  pkgconfig)
    pc=$(find "$tmp/prefix" -name kdn.pc | head -n 1)
    [ -n "$pc" ] || { echo "kdn.pc was not installed" >&2; exit 1; }
    export PKG_CONFIG_PATH=$(dirname "$pc")
    # shellcheck disable=SC2046  # pkg-config prints several words on purpose
    cc -std=c11 -Wall -Wextra -Werror "$src/examples/c/load_cache.c" $(pkg-config --cflags --libs kdn) \
      -o "$tmp/load_cache"
    ;;
  cmake)
    mkdir "$tmp/project"
    cp "$src/examples/c/load_cache.c" "$tmp/project/"
    cat >"$tmp/project/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.25)
project(load_cache_sample C)
find_package(kdn REQUIRED)
add_executable(load_cache load_cache.c)
target_link_libraries(load_cache PRIVATE kdn::kdn)
CMAKE
    cmake -S "$tmp/project" -B "$tmp/project/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
    cmake --build "$tmp/project/build" >/dev/null
    cp "$tmp/project/build/load_cache" "$tmp/load_cache"
    ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac

"$tmp/load_cache" "$tmp/a.kv" 3 "$tmp/out.bin"
cmp "$tmp/out.bin" "$tmp/ref.bin"
if [ -x "$tmp/prefix/bin/kdnctl" ]; then
  "$tmp/prefix/bin/kdnctl" export --layer 3 --kv k --dtype fp16 "$tmp/a.kv" -o "$tmp/kdnctl.bin"
  cmp "$tmp/out.bin" "$tmp/kdnctl.bin"
fi
echo "load_cache ($mode) output equals the reference export"
