#!/usr/bin/env bash
# examples/c/load_cache (built in the tree) writes what the format library exports, and what
# `kdnctl export --kv k --dtype fp16` writes (when KDNCTL is given).
#   sample_test.sh MAKE_TEST_CACHE LOAD_CACHE [KDNCTL]
set -euo pipefail
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kdn-sample.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for codec in raw lossless q4 q8+zstd; do
  "$1" "$tmp/a.kv" "$tmp/ref.bin" 2 "$codec"
  "$2" "$tmp/a.kv" 2 "$tmp/out.bin"
  cmp "$tmp/out.bin" "$tmp/ref.bin"
  if [ -n "${3:-}" ]; then
    "$3" export --layer 2 --kv k --dtype fp16 "$tmp/a.kv" -o "$tmp/kdnctl.bin"
    cmp "$tmp/out.bin" "$tmp/kdnctl.bin"
  fi
done
# Errors are reported, not crashed on.
if "$2" "$tmp/missing.kv" 0 "$tmp/x.bin" 2>"$tmp/err"; then exit 1; fi
grep -q KDN_E_NOT_FOUND "$tmp/err"
if "$2" "$tmp/a.kv" 99 "$tmp/x.bin" 2>/dev/null; then exit 1; fi
echo "load_cache output equals the reference export"
