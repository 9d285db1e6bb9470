"""Mounts the cluster makes under its own directories, found and undone at teardown."""

from __future__ import annotations

import subprocess
from pathlib import Path


def mounts() -> list[str]:
    """Mount points of this mount namespace, in mount order (/proc/self/mountinfo)."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            # Octal escapes (\040 for a space) are how mountinfo writes unusual characters.
            points.append(line.split()[4].encode().decode("unicode_escape"))
    return points


def unmount_under(*roots: Path | str) -> list[str]:
    """Unmount everything mounted at or below the given directories, newest first; returns them."""
    prefixes = [str(Path(r).resolve()) for r in roots]
    undone = []
    for point in reversed(mounts()):
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            # Lazy: a mount still busy (a process not yet reaped) is detached now, freed later.
            subprocess.run(["umount", "-l", point], capture_output=True)
            undone.append(point)
    return undone
