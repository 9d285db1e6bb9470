#!/usr/bin/env bash
# `make test`: every suite, in two pytest processes side by side. The real-node suite spends most
# of its time waiting (pods starting, rollouts, the HPA's metric windows, Dapr's control plane),
# and the unit, runtime and kwok suites fill that time with work. The two share nothing but the
# build caches (build.sh holds a lock) and each starts its own control plane on free ports.
#
# The node suite's output is kept in a file and printed when both are done, so neither garbles
# the other; the last lines give each suite's count and the exit code is non-zero if either failed.
#   hack/test.sh [pytest args...]     e.g. hack/test.sh -x
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
node_log=$(mktemp -t aiagent-node-suite.XXXXXX)

# A process group of its own, so an interrupt stops all of it (pytest, its cluster, its builds).
setsid "$PY" -m pytest tests/node "$@" >"$node_log" 2>&1 &
node_pid=$!
stop_node() { kill -TERM -- "-$node_pid" 2>/dev/null; wait "$node_pid" 2>/dev/null; }
trap 'stop_node; rm -f "$node_log"; exit 130' INT TERM

"$PY" -m pytest tests/unit tests/runtime tests/e2e "$@"
rest=$?
wait "$node_pid"
node=$?
trap - INT TERM

echo
echo "================ tests/node (ran beside the suites above) ================"
cat "$node_log"
echo
echo "make test: tests/unit tests/runtime tests/e2e exited $rest; tests/node exited $node"
rm -f "$node_log"
[ "$rest" = 0 ] && [ "$node" = 0 ]
