#!/bin/sh
# Builds the libFuzzer harnesses (tests/fuzz/fuzz_<target>.c) with clang and runs each for SECONDS
# (default 60) from a scratch copy of its seed corpus, with its dictionary, one harness at a time.
# Prints executions, executions per second, coverage (libFuzzer's cov and ft), corpus size and
# crashes per harness; exits non-zero if any harness crashed. Crash inputs are left in
# build-fuzz/fuzz-out/<target>/ (reproduce: build-fuzz/tests/fuzz_<target> FILE).
#   QVMD_FUZZ_BUILD_DIR  build directory (default build-fuzz)
#   QVMD_FUZZ_TARGETS    harnesses to run (default: all)
#   QVMD_FUZZ_RUNS       stop after this many executions instead of after SECONDS
#   QVMD_FUZZ_KEEP=1     keep the scratch corpora (new inputs found) in fuzz-out/<target>/corpus
#   ASAN_OPTIONS         default quarantine_size_mb=16; long runs add malloc_context_size=2
#                        (~1.5x faster; a crash input then reproduces with full stacks without it)
set -eu
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
case $SECONDS_EACH in
'' | *[!0-9]*)
	echo "usage: contrib/fuzz.sh [SECONDS]" >&2
	exit 2
	;;
esac
sh contrib/deps.sh clang libclang-rt-14-dev

BUILD=${QVMD_FUZZ_BUILD_DIR:-build-fuzz}
case $BUILD in
/*) ;;
*) BUILD=$(pwd)/$BUILD ;;
esac
if [ -z "${QVMD_FUZZ_TARGETS:-}" ]; then
	QVMD_FUZZ_TARGETS=""
	for f in tests/fuzz/fuzz_*.c; do
		f=${f#tests/fuzz/fuzz_}
		QVMD_FUZZ_TARGETS="$QVMD_FUZZ_TARGETS ${f%.c}"
	done
fi
TARGETS=$QVMD_FUZZ_TARGETS
CC=clang cmake -S . -B "$BUILD" -DQVMD_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
for t in $TARGETS; do
	cmake --build "$BUILD" -j"$(nproc)" --target "fuzz_$t" >/dev/null
done

# ASan's default 256 MiB quarantine makes every allocation touch fresh pages: 2-3x slower here.
export ASAN_OPTIONS="${ASAN_OPTIONS:-quarantine_size_mb=16}"
OUT=$BUILD/fuzz-out
failed=0
for t in $TARGETS; do
	dir=$OUT/$t
	rm -rf "$dir"
	mkdir -p "$dir/corpus"
	cp tests/fuzz/corpus/"$t"/* "$dir/corpus/"
	dict=""
	[ -f "tests/fuzz/$t.dict" ] && dict="-dict=$(pwd)/tests/fuzz/$t.dict"
	limit="-max_total_time=$SECONDS_EACH"
	[ -n "${QVMD_FUZZ_RUNS:-}" ] && limit="-runs=$QVMD_FUZZ_RUNS"
	set +e
	# shellcheck disable=SC2086
	(cd "$dir" && "$BUILD/tests/fuzz_$t" $limit $dict -print_final_stats=1 \
		-artifact_prefix="$dir/" -max_len=16384 -timeout=10 -rss_limit_mb=2048 corpus \
		>log 2>&1)
	rc=$?
	set -e
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log")
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/log")
	last=$(grep -E '^#[0-9]+.*cov:' "$dir/log" | tail -n 1)
	cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
	ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
	corp=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p')
	crashes=$(find "$dir" -maxdepth 1 \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
		-o -name 'oom-*' \) | wc -l)
	printf 'fuzz_%s: %s executions (%s/s), cov %s ft %s, corpus %s, %s crashes\n' "$t" \
		"${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes"
	if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
		failed=1
		echo "fuzz_$t: FAILED (exit $rc); log: $dir/log" >&2
		grep -E 'ERROR|SUMMARY|check failed|runtime error' "$dir/log" | head -n 10 >&2
	fi
	[ "${QVMD_FUZZ_KEEP:-0}" = 1 ] || rm -rf "$dir/corpus"
done
exit $failed
