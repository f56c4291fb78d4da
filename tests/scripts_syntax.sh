#!/bin/sh
# Usage: scripts_syntax.sh FILE...: each shell script parses with the interpreter its first line
# names (bash or sh). Benchmark and packaging scripts are not run by the suite; a syntax error in
# one would otherwise go unnoticed.
rc=0
for f in "$@"; do
	case $(head -n 1 "$f") in
	*bash*) i=bash ;;
	*) i=sh ;;
	esac
	if ! $i -n "$f"; then
		echo "$f: does not parse ($i -n)" >&2
		rc=1
	fi
done
exit $rc
