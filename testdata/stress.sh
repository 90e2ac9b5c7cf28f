#!/usr/bin/env bash
# make test-stress: the whole suite under the race detector, each test at
# -cpu 1 and 2, while two CPU-bound processes compete for the machine;
# STRESS_RUNS times in a row (default 1), stopping at the first failure.
# A test that passes on an idle machine and fails here is waiting on time
# instead of on an event, or the product misses a deadline a loaded host
# would miss too.
set -euo pipefail
runs=${STRESS_RUNS:-1}
go=${GO:-go}
burn() { while :; do :; done; }
burn & b1=$!
burn & b2=$!
trap 'kill $b1 $b2 2>/dev/null || true' EXIT
for i in $(seq 1 "$runs"); do
	echo "stress run $i of $runs (2 CPU burners beside it, -cpu 1,2)"
	start=$(date +%s)
	"$go" test -race -count=1 -cpu 1,2 -timeout 45m ./...
	echo "stress run $i of $runs passed in $(($(date +%s) - start)) s"
done
