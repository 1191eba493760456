#!/bin/sh
# Fails when a product binary (library or executable) carries fault-injection code: a symbol
# (nm -C) or the KDN_FAULT variable's name. Fault injection lives in tests/fault/ only.
status=0
for f in "$@"; do
  if ! nm -C "$f" >/dev/null 2>&1; then
    echo "cannot read symbols of $f" >&2
    status=1
    continue
  fi
  if nm -C "$f" 2>/dev/null | grep -E 'Fault(Injector|Plan|Decision|Injection)|HeldWrite|DecideFault'; then
    echo "fault injection symbols in $f" >&2
    status=1
  fi
  if grep -a -q KDN_FAULT "$f"; then
    echo "KDN_FAULT in $f" >&2
    status=1
  fi
done
[ "$status" = 0 ] && echo "no fault injection in: $*"
exit $status
