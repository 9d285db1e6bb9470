#!/usr/bin/env bash
# `make test`: every suite, in four pytest processes side by side. Each suite spends much of its
# time waiting (the node suite on pods, rollouts, the HPA's metric windows and Dapr's control
# plane; the runtime suite on timeouts, shutdowns and the fake model's latency; the kwok suite on
# its control plane), and two cores are busiest with four processes filling each other's waits.
# They share nothing but the build caches (build.sh and the image builds hold locks), and each
# starts its own control plane, model server and daprd on free ports.
#
# The first group prints as it goes; the others' output is kept in files and printed when all
# are done, so none garbles another. The last lines give each group's exit code, and the exit
# code is non-zero if any failed.
#   hack/test.sh [pytest args...]     e.g. hack/test.sh -x
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# The first group prints as it goes; the node suite, the longest and the most waiting, is last.
# The control-plane fault suite (its own control plane, mostly waiting out outages) is a process
# of its own, so that none takes much longer than the node suite.
FAULTS=tests/e2e/test_faults.py
groups=("tests/unit tests/e2e --ignore=$FAULTS" "tests/runtime" "$FAULTS" "tests/node")

pids=() logs=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
}
trap 'stop_all; rm -f "${logs[@]}"; exit 130' INT TERM

# The node suite waits on pods, and a pod waits on CPU (its runtime's imports, its daprd), so
# the suites that only need CPU yield to it: niced, they take what the node suite leaves idle.
niceness=(10 10 10 0)
for i in 1 2 3; do
    log=$(mktemp -t aiagent-suite.XXXXXX)
    # A process group of its own, so an interrupt stops all of it (pytest, its cluster, builds).
    # shellcheck disable=SC2086  # a group is several paths
    setsid nice -n "${niceness[$i]}" "$PY" -m pytest ${groups[$i]} "$@" >"$log" 2>&1 &
    pids+=("$!") logs+=("$log")
done

# shellcheck disable=SC2086
nice -n "${niceness[0]}" "$PY" -m pytest ${groups[0]} "$@"
codes=("$?")
for pid in "${pids[@]}"; do
    wait "$pid"
    codes+=("$?")
done
trap - INT TERM

for i in "${!logs[@]}"; do
    echo
    echo "================ ${groups[$((i + 1))]} (ran beside the suites above) ================"
    cat "${logs[$i]}"
done
rm -f "${logs[@]}"
echo
failed=0
for i in "${!groups[@]}"; do
    echo "make test: ${groups[$i]} exited ${codes[$i]}"
    [ "${codes[$i]}" = 0 ] || failed=1
done
exit "$failed"
