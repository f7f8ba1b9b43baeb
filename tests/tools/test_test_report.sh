#!/usr/bin/env bash
# tests/tools/test_test_report.sh TEST_REPORT — tools/test-report counts
# what really ran: stand-ins for Criterion programs (a shell script writing
# the TAP lines Criterion 2.4 writes) run under ctest in throw-away build
# directories, and each case checks the exit status and the lines a reader
# of tools/test's log would see. Every report starts out as a stale,
# passing one, which `clean` must remove.
set -euo pipefail
report=${1:?usage: test_test_report.sh PATH/TO/tools/test-report}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
cases=0

# fake SCENARIO --jobs=1 --tap=FILE
cat >"$tmp/fake" <<'FAKE'
#!/usr/bin/env bash
tap=${3#--tap=}
case $1 in
passes) printf 'TAP version 13\n1..2\n# Criterion v2.4.1\nok - unit::one  (0.00s)\nok - unit::two  (0.01s)\n' >"$tap" ;;
skips) printf 'TAP version 13\n1..2\nok - unit::one  (0.00s)\nok - unit::later  # SKIP needs a build with fault points\n' >"$tap" ;;
guarded_skip) printf 'TAP version 13\n1..1\nok - durable::sync  # SKIP io_uring is not available here\n' >"$tap" ;;
fails)
	printf 'TAP version 13\n1..2\nok - unit::one  (0.00s)\nnot ok - unit::two timed out (1.00s)\n' >"$tap"
	exit 1
	;;
crashes) kill -SEGV $$ ;;
cut_short) printf 'TAP version 13\n1..3\nok - durable::sync  (0.00s)\n' >"$tap" ;;
leaks)
	printf 'TAP version 13\n1..2\nok - unit::one  (0.00s)\nok - unit::two  (0.01s)\n' >"$tap"
	exit 1
	;;
esac
FAKE
chmod +x "$tmp/fake"

# run_case WANT_STATUS "GUARD PATTERNS" PROGRAM... — each PROGRAM is a fake
# scenario; a plain script test (/bin/true) runs beside them.
run_case() {
	local want=$1 guards=$2
	shift 2
	cases=$((cases + 1))
	dir=$tmp/case$cases
	mkdir -p "$dir/reports"
	printf '# guarded\n' >"$dir/guarded.txt"
	[[ -z "$guards" ]] || printf '%s\n' $guards >>"$dir/guarded.txt"
	echo 'add_test(script "/bin/true")' >"$dir/CTestTestfile.cmake"
	for program in "$@"; do
		echo "add_test($program \"$tmp/fake\" \"$program\" \"--jobs=1\"" \
			"\"--tap=$dir/reports/$program.tap\")" >>"$dir/CTestTestfile.cmake"
		printf 'TAP version 13\n1..1\nok - stale::old  (0.00s)\n' >"$dir/reports/$program.tap"
	done
	"$report" clean "$dir" ctest.xml
	ctest --test-dir "$dir" --output-junit ctest.xml >"$dir/ctest.log" 2>&1 || true
	local got=0
	out=$("$report" summary --guarded "$dir/guarded.txt" "$dir" ctest.xml) || got=$?
	if [[ $got -ne $want ]]; then
		echo "case $cases ($*): exit status $got, expected $want"
		echo "$out"
		failures=$((failures + 1))
	fi
	if grep -q 'stale::' <<<"$out"; then
		echo "case $cases ($*): a stale report was read"
		failures=$((failures + 1))
	fi
}

# expect TEXT — a line of the last case's output contains TEXT.
expect() {
	if ! grep -qF -- "$1" <<<"$out"; then
		echo "case $cases: no line with: $1"
		echo "$out" | sed 's/^/    | /'
		failures=$((failures + 1))
	fi
}

run_case 0 "unit::one" passes skips
expect "skipped: unit::later (needs a build with fault points)"
expect "test-report: 4 passed, 0 failed, 1 skipped"

run_case 1 "durable::*" guarded_skip
expect "FAILED: durable::sync was skipped (io_uring is not available here), but it guards durability or recovery"
expect "test-report: 1 passed, 1 failed, 0 skipped"

run_case 1 "unit::*" passes crashes
expect "FAILED: crashes left no report: it crashed, was killed or never ran (ctest: fail)"
expect "test-report: 3 passed, 1 failed, 0 skipped"

run_case 1 "durable::*" cut_short
expect "FAILED: cut_short left a report of 1 results for 3 tests"
expect "'durable::*' matches no test (1 test program(s) left no report)"
expect "test-report: 1 passed, 2 failed, 0 skipped"

run_case 1 "unit::*" leaks
expect "FAILED: leaks (ctest: fail), though its report shows no failed test"
expect "test-report: 3 passed, 1 failed, 0 skipped"

run_case 1 "unit::one" fails
expect "FAILED: unit::two (timed out)"
expect "test-report: 2 passed, 1 failed, 0 skipped"

run_case 1 "unit::one store::*" passes
expect "'store::*' matches no test: a renamed test or suite would no longer be guarded"
expect "test-report: 3 passed, 1 failed, 0 skipped"

run_case 1 "" passes
expect "lists no test: nothing is guarded"

if [[ $failures -ne 0 ]]; then
	echo "test_test_report: $failures check(s) failed"
	exit 1
fi
echo "test_test_report: $cases cases ok"
