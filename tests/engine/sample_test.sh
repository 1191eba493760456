#!/usr/bin/env bash
# examples/c/load_cache (built in the tree) writes what the format library exports.
#   sample_test.sh MAKE_TEST_CACHE LOAD_CACHE
set -euo pipefail
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kdn-sample.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for codec in raw lossless q4 q8+zstd; do
  "$1" "$tmp/a.kv" "$tmp/ref.bin" 2 "$codec"
  "$2" "$tmp/a.kv" 2 "$tmp/out.bin"
  cmp "$tmp/out.bin" "$tmp/ref.bin"
done
# Errors are reported, not crashed on.
if "$2" "$tmp/missing.kv" 0 "$tmp/x.bin" 2>"$tmp/err"; then exit 1; fi
grep -q KDN_E_NOT_FOUND "$tmp/err"
if "$2" "$tmp/a.kv" 99 "$tmp/x.bin" 2>/dev/null; then exit 1; fi
echo "load_cache output equals the reference export"
