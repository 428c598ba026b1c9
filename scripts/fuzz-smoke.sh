#!/bin/sh
# Runs every Go fuzz target in the module for FUZZTIME (default 5s) each.
set -e
cd "$(dirname "$0")/.."
t=${FUZZTIME:-5s}
grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do
	dir=$(dirname "$f")
	for name in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //'); do
		echo "fuzz $dir $name ($t)"
		go test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" "$dir"
	done
done
