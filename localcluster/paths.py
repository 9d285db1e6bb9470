"""Where the local cluster keeps things: the cache (outside the repo, keyed by version) and the
sources it builds from (this package)."""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# The same root build.sh uses (go-env.sh): Go caches, binaries, the Docker engine's data, images.
CACHE_ROOT = Path(
    os.environ.get("AIAGENT_CACHE_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aiagent-operator"
)
