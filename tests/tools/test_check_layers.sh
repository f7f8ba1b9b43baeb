#!/usr/bin/env bash
# tests/tools/test_check_layers.sh CHECK_LAYERS — tools/check-layers catches
# what it is there to catch: in a throw-away tree, a core/ file including a
# net/ header and a net/ file including a header private to queue/ both fail
# it (exit 1, each named by file and line); the same tree with public
# includes only passes (exit 0); a path with no sources is an error (exit
# 2), not a clean tree.
set -euo pipefail
check_layers=${1:?usage: test_check_layers.sh PATH/TO/tools/check-layers}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
	echo "test_check_layers: $*"
	failures=$((failures + 1))
}

# run ROOT WANT_STATUS — runs check-layers on ROOT; its output is in $out.
run() {
	local got=0
	out=$("$check_layers" "$1" 2>&1) || got=$?
	[[ $got -eq $2 ]] || fail "on $1: exit status $got, expected $2; output:"$'\n'"$out"
}

expect() {
	grep -qF -- "$1" <<<"$out" || fail "no line with '$1' in:"$'\n'"$out"
}

mkdir -p "$tmp/bad/core" "$tmp/bad/net" "$tmp/bad/queue"
printf '#include "core/buf.h"\n#include "net/x.h"\n' >"$tmp/bad/core/a.c"
printf '#include "queue/queue.h"\n#include "queue/segment.h"\n' >"$tmp/bad/net/b.c"
printf '#include "core/buf.h"\n#include "queue/segment.h"\n' >"$tmp/bad/queue/c.c"
run "$tmp/bad" 1
expect "core/a.c:2: core/ includes net/x.h, a layer above it"
expect "net/b.c:2: includes queue/segment.h, private to queue/"
[[ $(grep -c '\.c:[0-9]*:' <<<"$out") -eq 2 ]] || fail "expected exactly two violations in:"$'\n'"$out"

mkdir -p "$tmp/clean/core" "$tmp/clean/net" "$tmp/clean/queue"
printf '#include "core/buf.h"\n' >"$tmp/clean/core/a.c"
printf '#include "core/buf.h"\n#include "queue/queue.h"\n' >"$tmp/clean/net/b.c"
printf '#include "core/buf.h"\n#include "queue/segment.h"\n' >"$tmp/clean/queue/c.c"
run "$tmp/clean" 0
expect "tools/check-layers: ok"

mkdir -p "$tmp/empty"
run "$tmp/empty" 2
run "$tmp/missing" 2

if [[ $failures -ne 0 ]]; then
	echo "test_check_layers: $failures check(s) failed"
	exit 1
fi
echo "test_check_layers: ok"
