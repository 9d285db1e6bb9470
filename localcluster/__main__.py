"""Command line for the local cluster.

python -m localcluster build     build (or reuse) the Go binaries, print their dir
python -m localcluster images    build (or reuse) every image; print build times and sizes (JSON)
python -m localcluster dapr      build (or reuse) Dapr's binary and its two images; print (JSON)
python -m localcluster up [--kwok-nodes N] [--kwok-only] [--workdir DIR] [--keep] [--dapr]
                                 start the cluster (a real node where this host can run one),
                                 print the KUBECONFIG export, stay up until Ctrl-C (or SIGTERM)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import binaries, daprbuild, images
from .cluster import LocalCluster
from .procs import ClusterError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localcluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build or reuse the binaries and print their directory")
    sub.add_parser("images", help="build or reuse every image and report times and sizes")
    sub.add_parser("dapr", help="build or reuse Dapr (control plane + sidecar) and its images")
    up = sub.add_parser("up", help="start a local cluster and keep it up until Ctrl-C")
    up.add_argument("--kwok-nodes", type=int, default=3, help="fake kwok nodes (default 3)")
    up.add_argument("--kwok-only", action="store_true", help="no real node, even if possible")
    up.add_argument("--workdir", type=Path, help="certs, data and logs (default: a temp dir)")
    up.add_argument("--keep", action="store_true", help="keep the workdir (logs) after shutdown")
    up.add_argument(
        "--dapr",
        action="store_true",
        help="also Dapr's control plane (its Helm chart) and a Redis, on the real node",
    )
    args = parser.parse_args(argv)

    try:
        if args.command == "build":
            print(binaries.build())
            return 0
        if args.command == "images":
            json.dump(images.build_all(), sys.stdout, indent=2)
            print()
            return 0
        if args.command == "dapr":
            json.dump(daprbuild.build_all(), sys.stdout, indent=2)
            print()
            return 0
        started = time.monotonic()
        cluster = LocalCluster(
            args.workdir,
            kwok_nodes=args.kwok_nodes,
            real_node=False if args.kwok_only else None,
            keep_workdir=args.keep,
            dapr=args.dapr,
        )
        if cluster.skip_reason and not args.kwok_only:
            print(f"no real node: {cluster.skip_reason}; kwok nodes only", file=sys.stderr)
        with cluster:
            nodes = f"{args.kwok_nodes} kwok nodes" + (
                " + 1 real node" if cluster.real_node else ""
            )
            print(
                f"cluster up in {time.monotonic() - started:.1f}s: {cluster.server}, {nodes}, "
                f"logs in {cluster.workdir / 'logs'}",
                file=sys.stderr,
            )
            if cluster.redis is not None:
                print(
                    f"Dapr in dapr-system; Redis for Components at {cluster.redis.address}, "
                    f"its password in {cluster.redis.password_file} (put it in a Secret)",
                    file=sys.stderr,
                )
            print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)
            print("Ctrl-C to stop", file=sys.stderr, flush=True)
            while True:
                time.sleep(1)
                cluster.check_alive()
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return 130
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
