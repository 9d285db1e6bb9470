"""Command line for the local control plane.

python -m tests.controlplane build         build (or reuse) the binaries, print their dir
python -m tests.controlplane up [--nodes N] [--workdir DIR] [--keep]
                                           build or reuse, start, print the KUBECONFIG export,
                                           stay up until Ctrl-C (or SIGTERM)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .cluster import ControlPlaneError, LocalControlPlane, build_binaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.controlplane",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build or reuse the binaries and print their directory")
    up = sub.add_parser("up", help="start a control plane and keep it up until Ctrl-C")
    up.add_argument("--nodes", type=int, default=3, help="fake kwok nodes (default 3)")
    up.add_argument(
        "--workdir", type=Path, help="directory for certs, data and logs (default: a temp dir)"
    )
    up.add_argument(
        "--keep", action="store_true", help="keep the temp workdir (logs) after shutdown"
    )
    args = parser.parse_args(argv)

    try:
        bin_dir = build_binaries()
        if args.command == "build":
            print(bin_dir)
            return 0
        started = time.monotonic()
        print("starting control plane ...", file=sys.stderr, flush=True)
        with LocalControlPlane(bin_dir, args.workdir, args.nodes, keep_workdir=args.keep) as cp:
            print(
                f"control plane up in {time.monotonic() - started:.1f}s: {cp.server}, "
                f"{args.nodes} kwok nodes, logs in {cp.log_dir}",
                file=sys.stderr,
            )
            print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
            print("Ctrl-C to stop", file=sys.stderr, flush=True)
            while True:
                time.sleep(1)
                cp.check_alive()
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return 130
    except ControlPlaneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
