#!/bin/sh
# The knowledge-set scripts (examples/sets) end to end, in ROOT (a plain directory or a kdnfs
# mount): create, add, list, snapshot, rm, export, import, then answer from the imported set.
# usage: sets_test.sh ROOT   (env: KDN_ENGINE, KDN_MODEL, KDN_SOURCE_DIR)
set -eu
root=$1
sets=$KDN_SOURCE_DIR/examples/sets
data=$KDN_SOURCE_DIR/examples/kdn-engine/data
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

for s in create add list rm snapshot export import; do
  "$sets/kdn-set-$s" --help | grep -q "^usage: kdn-set-$s" || fail "kdn-set-$s --help"
done
"$sets/kdn-set-add" "$root/none" "$data/garden.txt" 2>/dev/null && fail "add to a missing set"

"$sets/kdn-set-create" --model "$KDN_MODEL" --codec q8 "$root/tales"
[ -f "$root/tales/.kdnset" ] || fail "create wrote no .kdnset"
"$sets/kdn-set-add" "$root/tales" "$data/garden.txt" "$data/boat.txt" > "$scratch/added"
grep -q "tales/garden.kv$" "$scratch/added" || fail "add did not name garden.kv"
"$sets/kdn-set-add" --codec lossless "$root/tales" "$data/owl.txt" > /dev/null
{ [ -s "$root/tales/garden.kv" ] && [ -s "$root/tales/boat.kv" ]; } || fail "add made no caches"

"$sets/kdn-set-list" "$root/tales" > "$scratch/list"
cat "$scratch/list" >&2
garden_tokens=$(( $(wc -c < "$data/garden.txt") + 1 ))
grep -Eq "^garden\.kv +$garden_tokens +q8 " "$scratch/list" || fail "list: garden tokens/codec"
grep -Eq "^owl\.kv +[0-9]+ +lossless " "$scratch/list" || fail "list: owl codec"
grep -Eq "^total \(3\) " "$scratch/list" || fail "list: total"

"$sets/kdn-set-snapshot" "$root/tales" "$root/tales-v1"
[ "$(stat -c %i "$root/tales/garden.kv")" = "$(stat -c %i "$root/tales-v1/garden.kv")" ] \
  || fail "snapshot did not hard-link"
[ "$(stat -c %h "$root/tales/garden.kv")" = 2 ] || fail "link count after snapshot"
"$sets/kdn-set-snapshot" "$root/tales" "$root/tales-v1" 2>/dev/null && fail "snapshot over an existing one"

"$sets/kdn-set-rm" "$root/tales" boat.kv
[ ! -e "$root/tales/boat.kv" ] || fail "rm left boat.kv"
[ -s "$root/tales-v1/boat.kv" ] || fail "rm took boat.kv out of the snapshot too"
"$sets/kdn-set-rm" "$root/tales" boat 2>/dev/null && fail "rm of a missing name succeeded"

"$sets/kdn-set-export" "$root/tales-v1" "$scratch/tales.tar"
"$sets/kdn-set-import" "$scratch/tales.tar" "$root/imported"
for f in garden.kv boat.kv owl.kv .kdnset; do
  cmp "$root/tales-v1/$f" "$root/imported/$f" || fail "import changed $f"
done

# The imported set answers exactly like a prefill from scratch (raw-exactness is the C++ tests'
# job; here: it loads, and q8 keeps the greedy answer close).
out=$("$KDN_ENGINE" generate --model "$KDN_MODEL" --context "$root/imported/garden.kv" \
  --prompt " The rabbit" --max-new 8 2>"$scratch/err") || { cat "$scratch/err" >&2; fail "generate"; }
[ -n "$out" ] || fail "generate printed nothing"
grep -q "ttft_ms=" "$scratch/err" || fail "generate printed no timing"
echo "sets_test: ok ($root)" >&2
