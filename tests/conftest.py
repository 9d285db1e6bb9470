"""Session-wide: when the real-node suite is selected, our images start building at once, in the
background, while the unit, runtime and kwok suites run (and the Go binaries compile): on a cold
machine that overlaps minutes of network-bound work with CPU-bound work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from localcluster.paths import CACHE_ROOT, REPO

_prefetch: subprocess.Popen[bytes] | None = None
PREFETCH_LOG = CACHE_ROOT / "tmp" / "images-prefetch.log"


def pytest_collection_finish(session: pytest.Session) -> None:
    global _prefetch
    if not any("tests/node/" in str(item.fspath) for item in session.items):
        return
    from localcluster import real_node_unavailable

    if real_node_unavailable():
        return
    PREFETCH_LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(PREFETCH_LOG, "wb") as log:
        # Dapr's binary too (the node suite's cluster runs Dapr): minutes of Go on a cold machine.
        _prefetch = subprocess.Popen(
            [
                "bash",
                "-c",
                f"{sys.executable} -m localcluster images && {sys.executable} -m localcluster dapr",
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for_image_prefetch() -> None:
    """Let the background build finish (its failure is reported by the cluster's own build)."""
    if _prefetch is not None:
        _prefetch.wait()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _prefetch is not None and _prefetch.poll() is None:
        os.killpg(_prefetch.pid, signal.SIGTERM)
        _prefetch.wait()
