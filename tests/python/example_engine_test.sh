#!/usr/bin/env bash
# examples/python/kdn_engine.py on the real model: learns a passage into a knowledge set, then
# answers a prompt that starts with it twice, reusing the cached prefix and with full prefill:
# the outputs must be equal, and the cached run must have loaded the prefix. With KDN_ENGINE (the
# C example engine), the C engine's cache of the same text is the same model's KV (same identity
# and tokens, values within float rounding) and the Python engine answers from it.
#   example_engine_test.sh PYTHON SOURCE_DIR DEFAULT_TEST_MODEL [KDN_ENGINE]
set -euo pipefail
python=$1 src=$2 default_model=$3 c_engine=${4:-}
model=$(dirname "$default_model")/kjv-byte.bin
[ -f "$model" ] || model=${KDN_TEST_MODEL:-$default_model}
if [ ! -f "$model" ]; then
  if [ "${CI:-}" = true ]; then echo "required under CI=true: a test model ($model)" >&2; exit 1; fi
  echo "skipped: no test model (../shared/models/kjv-byte.bin or KDN_TEST_MODEL)"
  exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kdn-py-engine.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
engine=("$python" -B "$src/examples/python/kdn_engine.py" --model "$model" --set "$tmp/set")
doc="In the beginning God created the heaven and the earth. And the earth was without form, and void."
"${engine[@]}" learn --name genesis "$doc"
"${engine[@]}" ask --max-tokens 24 "$doc And God said" >"$tmp/cached.txt" 2>"$tmp/cached.err"
"${engine[@]}" ask --max-tokens 24 --no-cache "$doc And God said" >"$tmp/full.txt" 2>"$tmp/full.err"
cat "$tmp/cached.err" "$tmp/cached.txt"
# BOS + 96 bytes (97 tokens) learned, a 110-token prompt: its longest 32-token boundary the
# file holds is 96.
grep -q "cached prefix: 96 of 110 tokens" "$tmp/cached.err"
grep -q "(0 cached, 110 prefilled)" "$tmp/full.err"
[ -s "$tmp/full.txt" ] || { echo "no output" >&2; exit 1; }
cmp "$tmp/cached.txt" "$tmp/full.txt"
echo "the output with the cached prefix equals the output with full prefill"

[ -n "$c_engine" ] || exit 0
mkdir "$tmp/cset"
printf '%s' "$doc" >"$tmp/doc.txt"
"$c_engine" prefill --model "$model" --text "$tmp/doc.txt" --out "$tmp/cset/genesis.kv" --threads 1 \
  2>/dev/null
"$python" -B -c '
import sys, kdn, numpy as np
c, p = kdn.open(sys.argv[1]), kdn.open(sys.argv[2])
assert c.info.model == p.info.model, (c.info.model, p.info.model)
assert c.info.tokens == p.info.tokens
diff = max(float(np.abs(a - b).max()) for a, b in zip(c.numpy(), p.numpy()))
assert diff < 1e-4, diff
print("C and Python engines: same model identity and tokens, KV max abs diff %.2g" % diff)
' "$tmp/cset/genesis.kv" "$tmp/set/genesis.kv"
# The C engine saved with 256-token hashes: a prompt of exactly the document matches whole.
"$python" -B "$src/examples/python/kdn_engine.py" --model "$model" --set "$tmp/cset" \
  --chunk-tokens 256 ask --max-tokens 8 "$doc" >/dev/null 2>"$tmp/c.err"
grep -q "cached prefix: 97 of 97 tokens" "$tmp/c.err"
echo "the Python engine answers from the C engine's cache"
