#!/bin/sh
# Runs every Go fuzz target in the module for FUZZTIME each (default 10000x:
# a count of executions; a duration can fail spuriously with "context
# deadline exceeded" in Go 1.26, golang/go#75804).
set -e
cd "$(dirname "$0")/.."
t=${FUZZTIME:-10000x}
grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do
	dir=$(dirname "$f")
	for name in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //'); do
		echo "fuzz $dir $name ($t)"
		go test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" "$dir"
	done
done
