#!/usr/bin/env bash
# The Python package installed two ways, each used with no KDN_LIBRARY set:
#  1. `cmake --install` into a temporary prefix: the package in <prefix>/lib/pythonX.Y/...,
#     finding the libkdn installed beside it (not the build tree's);
#  2. `pip install --no-build-isolation --no-deps` of a copy of python/ into a venv (no network),
#     finding libkdn through the system's search path (LD_LIBRARY_PATH here, ldconfig when
#     installed system-wide).
#   install_test.sh PYTHON BUILD_DIR SOURCE_DIR KDNCTL LIBKDN
set -euo pipefail
python=$1 build=$2 src=$3 kdnctl=$4 libkdn=$5
unset KDN_LIBRARY PYTHONPATH
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kdn-py-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$kdnctl" synth --model tiny --tokens 100 --codec q4 -o "$tmp/a.kv" >/dev/null

# What each installed copy must do: open the cache, load it, and say which libkdn it loaded.
check='
import sys, kdn
c = kdn.open(sys.argv[1])
assert c.info.n_tokens == 100 and c.info.model.name == "stories260K", c.info
try:
    import numpy
    k, v = c.numpy()
    assert k.shape == (5, 100, 4, 8)
except ImportError:
    pass
print(kdn.__file__, kdn.library_path())
'

cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
pydir=$(cd "$tmp/prefix" && find . -path '*/kdn/__init__.py' | head -n 1)
[ -n "$pydir" ] || { echo "the kdn package was not installed under the prefix" >&2; exit 1; }
pydir=$tmp/prefix/$(dirname "$(dirname "$pydir")")
out=$(cd "$tmp" && PYTHONPATH=$pydir "$python" -c "$check" "$tmp/a.kv")
echo "cmake --install: $out"
case $out in
  "$tmp/prefix/"*" $tmp/prefix/"*libkdn.so*) ;;
  *) echo "the installed package did not load the installed libkdn" >&2; exit 1 ;;
esac

if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  if [ "${CI:-}" = true ]; then echo "required under CI=true: python3-venv" >&2; exit 1; fi
  echo "skipped the pip install: no venv/ensurepip (Debian: python3-venv)"
  exit 0
fi
cp -r "$src/python" "$tmp/src"
"$python" -m venv --system-site-packages "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --no-build-isolation --no-deps --no-index -q "$tmp/src"
out=$(cd "$tmp" && LD_LIBRARY_PATH=$(dirname "$libkdn") "$tmp/venv/bin/python" -c "$check" "$tmp/a.kv")
echo "pip install: $out"
case $out in
  "$tmp/venv/"*) ;;
  *) echo "the venv did not import its own copy of the package" >&2; exit 1 ;;
esac
echo "the kdn package works installed by cmake --install and by pip install"
