#!/usr/bin/env bash
# Builds the local cluster's binaries from Go modules into a cache directory outside the repo:
# the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok), the real
# node's (kubelet, kube-proxy, metrics-server, coredns) and helm. (BuildKit's Dockerfile frontend
# is built by images.py, apart, so image builds need not wait for this.)
#
#   $CACHE_ROOT/bin/<kubernetes version>-<hash of pins, wrapper modules, this script, go version>/
#
# A rebuild happens only when one of those changes; with every binary present this returns at once.
# Progress goes to stderr; the bin dir is the LAST line of stdout:  BIN=$(./build.sh | tail -1)
#
#   ./build.sh              build what is missing, print the bin dir
#   ./build.sh --print-dir  print the bin dir only (no build, it may not exist yet)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kwok helm
    metrics-server coredns)
# Two cores: each `go build` already compiles packages in parallel, so two jobs at once keeps the
# cores busy through the single-threaded link steps without oversubscribing much.
MAX_JOBS=${CONTROLPLANE_BUILD_JOBS:-2}

cache_key() {
    {
        cat "$CONTROLPLANE_DIR/versions.env" "$CONTROLPLANE_DIR/build.sh" "$CONTROLPLANE_DIR/common.sh" "$CONTROLPLANE_DIR/go-env.sh"
        cat "$CONTROLPLANE_DIR"/gomod/*/go.mod "$CONTROLPLANE_DIR"/gomod/*/go.sum "$CONTROLPLANE_DIR"/gomod/*/*.go
        cat "$CONTROLPLANE_DIR"/coredns/go.mod "$CONTROLPLANE_DIR"/coredns/go.sum "$CONTROLPLANE_DIR"/coredns/*.go
        go version
    } | sha256sum | cut -c1-12
}

BIN_DIR="$CACHE_ROOT/bin/k8s-$KUBERNETES_VERSION-$(cache_key)"

if [ "${1:-}" = "--print-dir" ]; then
    echo "$BIN_DIR"
    exit 0
elif [ $# -gt 0 ]; then
    echo "usage: $0 [--print-dir]" >&2
    exit 2
fi

missing() {
    local b
    for b in "${BINARIES[@]}"; do [ -x "$BIN_DIR/$b" ] || echo "$b"; done
}

if [ -z "$(missing)" ]; then
    echo "$BIN_DIR"
    exit 0
fi

mkdir -p "$BIN_DIR/.logs"
# Two builds of the same key (two terminals, two test sessions) would duplicate an hour of work.
exec 9>"$BIN_DIR/.lock"
if ! flock -n 9; then
    echo "[build] another build of $BIN_DIR is running; waiting for it" >&2
    flock 9
fi
TODO=$(missing | tr '\n' ' ')
if [ -z "$TODO" ]; then
    echo "$BIN_DIR"
    exit 0
fi
echo "[build] building into $BIN_DIR: $TODO" >&2
echo "[build] cold builds take a long while on two cores; logs in $BIN_DIR/.logs/" >&2

STAGE="$BIN_DIR/.tmp.$$"
mkdir -p "$STAGE"

# Without these, the servers report v0.0.0-master, which helm's kubeVersion checks and version-skew
# logic would reject.
minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
K8S_COMMANDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
K8S_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
-X k8s.io/component-base/version.gitTreeState=clean"

# Each job builds into its own staging dir and renames into place at the end, so an interrupted
# build never leaves a binary that the "all present" check above would take as complete.
job_kubernetes() {
    local out="$STAGE/kubernetes" b
    mkdir -p "$out"
    local pkgs=()
    for b in $K8S_COMMANDS; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
    # One `go build` for all five shares the compile work of the packages they have in common.
    (cd "$CONTROLPLANE_DIR/gomod/kubernetes" && go build -trimpath -ldflags "$K8S_LDFLAGS" -o "$out/" "${pkgs[@]}")
    for b in $K8S_COMMANDS; do mv -f "$out/$b" "$BIN_DIR/$b"; done
}
job_etcd() {
    (cd "$CONTROLPLANE_DIR/gomod/etcd" && go build -trimpath -ldflags "-s -w" -o "$STAGE/etcd" .)
    mv -f "$STAGE/etcd" "$BIN_DIR/etcd"
}
job_kwok() {
    mkdir -p "$STAGE/kwok"
    (cd "$STAGE" && GOBIN="$STAGE/kwok" go install -trimpath \
        -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
    mv -f "$STAGE/kwok/kwok" "$BIN_DIR/kwok"
}
job_metrics_server() {
    mkdir -p "$STAGE/ms"
    (cd "$STAGE" && GOBIN="$STAGE/ms" go install -trimpath \
        -ldflags "-s -w -X sigs.k8s.io/metrics-server/pkg/version.gitVersion=$METRICS_SERVER_VERSION" \
        "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION")
    mv -f "$STAGE/ms/metrics-server" "$BIN_DIR/metrics-server"
}
# CoreDNS with a few plugins (coredns/main.go), in a module of its own: see coredns/gen-gomod.sh.
job_coredns() {
    local pinned
    pinned=$(cd "$CONTROLPLANE_DIR/coredns" && go list -m -f '{{.Version}}' github.com/coredns/coredns)
    if [ "$pinned" != "$COREDNS_VERSION" ]; then
        echo "coredns/go.mod has $pinned, versions.env $COREDNS_VERSION: run coredns/gen-gomod.sh" >&2
        return 1
    fi
    (cd "$CONTROLPLANE_DIR/coredns" && go build -trimpath -ldflags "-s -w" -o "$STAGE/coredns" .)
    mv -f "$STAGE/coredns" "$BIN_DIR/coredns"
}
job_helm() {
    mkdir -p "$STAGE/helm"
    (cd "$STAGE" && GOBIN="$STAGE/helm" go install -trimpath \
        -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
    mv -f "$STAGE/helm/helm" "$BIN_DIR/helm"
}

# Queue only what is missing; the Kubernetes job (by far the longest) goes first.
QUEUE=()
case " $TODO " in *" kube"*) QUEUE+=(kubernetes) ;; esac
for b in etcd helm kwok metrics-server coredns; do
    case " $TODO " in *" $b "*) QUEUE+=("${b//-/_}") ;; esac
done

declare -A PID_OF=() START_OF=()
cleanup() {
    local j
    for j in "${!PID_OF[@]}"; do kill -- "-${PID_OF[$j]}" 2>/dev/null || true; done
    rm -rf "$STAGE"
}
trap cleanup EXIT
trap 'echo "[build] interrupted" >&2; exit 130' INT TERM

start_job() {
    local j=$1
    # Own session/process group per job so cleanup can stop `go` and its compilers in one kill.
    setsid bash -c "$(declare -f "job_$j"); $(declare -p STAGE BIN_DIR CONTROLPLANE_DIR K8S_COMMANDS K8S_LDFLAGS KWOK_VERSION HELM_VERSION METRICS_SERVER_VERSION COREDNS_VERSION); set -euo pipefail; job_$j" \
        >"$BIN_DIR/.logs/$j.log" 2>&1 &
    PID_OF[$j]=$!
    START_OF[$j]=$SECONDS
    echo "[build] $j: started" >&2
}

FAILED=()
next=0
last_beat=$SECONDS
while [ $next -lt ${#QUEUE[@]} ] || [ ${#PID_OF[@]} -gt 0 ]; do
    while [ $next -lt ${#QUEUE[@]} ] && [ ${#PID_OF[@]} -lt "$MAX_JOBS" ]; do
        start_job "${QUEUE[$next]}"
        next=$((next + 1))
    done
    sleep 2
    for j in "${!PID_OF[@]}"; do
        pid=${PID_OF[$j]}
        kill -0 "$pid" 2>/dev/null && continue
        rc=0; wait "$pid" || rc=$?
        unset "PID_OF[$j]"
        took=$((SECONDS - START_OF[$j]))
        if [ $rc -eq 0 ]; then
            echo "[build] $j: done in ${took}s" >&2
        else
            echo "[build] $j: FAILED (exit $rc) after ${took}s; last lines of $BIN_DIR/.logs/$j.log:" >&2
            tail -n 30 "$BIN_DIR/.logs/$j.log" | sed 's/^/    /' >&2
            FAILED+=("$j")
        fi
    done
    if [ $((SECONDS - last_beat)) -ge 60 ] && [ ${#PID_OF[@]} -gt 0 ]; then
        last_beat=$SECONDS
        for j in "${!PID_OF[@]}"; do echo "[build] $j: still building ($((SECONDS - START_OF[$j]))s)" >&2; done
    fi
done

if [ ${#FAILED[@]} -gt 0 ]; then
    echo "[build] failed: ${FAILED[*]}" >&2
    exit 1
fi
left=$(missing | tr '\n' ' ')
if [ -n "$left" ]; then
    echo "[build] finished but still missing: $left" >&2
    exit 1
fi
{ cat "$CONTROLPLANE_DIR/versions.env"; echo "GO=$(go version)"; } >"$BIN_DIR/VERSIONS"
echo "[build] all binaries ready in ${SECONDS}s" >&2
echo "$BIN_DIR"
