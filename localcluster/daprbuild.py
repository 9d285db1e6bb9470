"""Dapr for the local cluster, built here: one multi-call binary (control plane and sidecar) from Go
modules (``dapr/build.sh``), its two images, and the upstream source the Helm chart comes from.

    bin_dir = build_dapr()                   # bin_dir / "daprd", "operator", ... (one binary)
    with docker.engine() as d:
        refs = build_dapr_images(d)          # [control_plane_image(), sidecar_image()]
    chart = dapr_source() / "charts/dapr"    # the official chart (CRDs in chart / "crds")
    sets = chart_image_values()              # helm --set values: the chart on those images

Dapr is built only when asked for: nothing else in the package calls these.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from . import binaries
from .docker import DOCKER_CLI, Docker
from .paths import CACHE_ROOT, HERE
from .procs import ClusterError, run

DAPR_DIR = HERE / "dapr"
BUILD_SCRIPT = DAPR_DIR / "build.sh"
# What the multi-call binary answers to, by the base name it is called with: exactly the paths
# (/<name>) the official chart's `command:` and the sidecar injector (`/daprd`) run.
COMMANDS = ("daprd", "injector", "operator", "placement", "scheduler", "sentry")
IMAGE_PREFIX = "localhost/aiagent-local"
# Upstream's images are distroless static nonroot: uid/gid 65532, working dir /.
NONROOT = 65532
# Bump when the image layout below changes (the binary's own changes are in the bin dir's name).
_IMAGE_RECIPE = 1


def log(message: str) -> None:
    print(f"[dapr] {message}", file=sys.stderr, flush=True)


@functools.cache
def dapr_version() -> str:
    """The pinned Dapr version, e.g. ``v1.18.2`` (dapr/versions.env)."""
    for line in (DAPR_DIR / "versions.env").read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "DAPR_VERSION":
            return value.strip()
    raise ClusterError(f"DAPR_VERSION missing from {DAPR_DIR / 'versions.env'}")


def control_plane_image() -> str:
    """The control-plane image: the binary as /daprd /injector /operator /placement /scheduler
    /sentry, like upstream's ``dapr`` image."""
    return f"{IMAGE_PREFIX}/dapr:{dapr_version().removeprefix('v')}"


def sidecar_image() -> str:
    """The sidecar image the injector adds to pods: /daprd, like upstream's ``daprd`` image."""
    return f"{IMAGE_PREFIX}/daprd:{dapr_version().removeprefix('v')}"


def build_dapr(*, timeout: float | None = None) -> Path:
    """Build the binary (a no-op when cached) and return its bin dir, which holds ``dapr`` and a
    hard link to it per command (``daprd``, ``operator``, ...).

    Cached under ``$CACHE_ROOT/dapr-bin/<version>-<hash>/``; a build takes minutes, a cached one
    a few tens of milliseconds. build.sh's progress goes to our stderr.
    """
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise ClusterError(
            f"{BUILD_SCRIPT} failed (exit {result.returncode}); see its output above"
        )
    lines = result.stdout.strip().splitlines()
    if not lines:
        raise ClusterError(f"{BUILD_SCRIPT} printed no bin dir")
    bin_dir = Path(lines[-1])
    missing = [c for c in ("dapr", *COMMANDS) if not (bin_dir / c).is_file()]
    if missing:
        raise ClusterError(f"{BUILD_SCRIPT} reported {bin_dir} but it lacks {missing}")
    return bin_dir


def dapr_source() -> Path:
    """The ``github.com/dapr/dapr`` module at the pin, unpacked in the Go module cache (downloaded
    if missing): ``charts/dapr`` (the official chart, CRDs in its ``crds/``),
    ``pkg/injector/annotations/annotations.go``, the sources of every command."""
    module = f"github.com/dapr/dapr@{dapr_version()}"
    path = CACHE_ROOT / "gomodcache" / module
    if (path / "go.mod").is_file():
        return path
    info = json.loads(binaries.go("mod", "download", "-json", module))
    if info.get("Error"):
        raise ClusterError(f"go mod download {module}: {info['Error']}")
    return Path(info["Dir"])


def chart_image_values() -> dict[str, str]:
    """``helm --set`` values that point the official chart at our two images: an image name with
    a ``/`` is taken by the chart as a full reference (so ``global.registry`` no longer matters)."""
    control_plane = control_plane_image()
    return {
        "global.tag": dapr_version().removeprefix("v"),  # the pods' app.kubernetes.io/version
        "dapr_operator.image.name": control_plane,
        "dapr_placement.image.name": control_plane,
        "dapr_scheduler.image.name": control_plane,
        "dapr_sentry.image.name": control_plane,
        "dapr_sidecar_injector.injectorImage.name": control_plane,
        # The sidecar the injector adds to Dapr-enabled pods (its SIDECAR_IMAGE).
        "dapr_sidecar_injector.image.name": sidecar_image(),
    }


def build_dapr_images(docker: Docker) -> list[str]:
    """Build (or reuse) the control-plane and sidecar images; return their references.

    Each is ``FROM scratch`` (made with ``docker import``: no builder, no base image) and labelled
    with a key of the binary's cache dir and this recipe, so a warm call only inspects two
    images. Import them into a node like any other: ``images.load_into_node``.
    """
    bin_dir = build_dapr()
    binary = bin_dir / "dapr"
    wanted = {
        control_plane_image(): {"/dapr": binary, **{f"/{c}": binary for c in COMMANDS}},
        sidecar_image(): {"/daprd": binary},
    }
    for ref, files in wanted.items():
        key = _key(bin_dir.name, ref, sorted(files), _IMAGE_RECIPE)
        if key in _labels(docker, ref).values():
            continue
        started = time.monotonic()
        _import_scratch_image(docker, ref, files, key)
        log(f"made {ref} from {bin_dir} in {time.monotonic() - started:.1f}s")
    return list(wanted)


def image_sizes(docker: Docker) -> dict[str, int]:
    """Bytes per image, as `docker image inspect` counts them."""
    return {
        ref: int(docker("image", "inspect", "--format", "{{.Size}}", ref).strip())
        for ref in (control_plane_image(), sidecar_image())
    }


def build_all() -> dict[str, object]:
    """Build (or reuse) the binary and both images; the times and sizes, for `python -m
    localcluster dapr` to print."""
    from .docker import engine

    started = time.monotonic()
    bin_dir = build_dapr()
    binary_seconds = round(time.monotonic() - started, 2)
    with engine() as docker:
        refs = build_dapr_images(docker)
        sizes = image_sizes(docker)
    return {
        "version": dapr_version(),
        "bin_dir": str(bin_dir),
        "binary_bytes": (bin_dir / "dapr").stat().st_size,
        "binary_seconds": binary_seconds,
        "images": refs,
        "image_bytes": sizes,
        "seconds": round(time.monotonic() - started, 1),
    }


# -- internals ----------------------------------------------------------------------------------


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:12]


def _labels(docker: Docker, ref: str) -> dict[str, str]:
    result = run(
        [DOCKER_CLI, "image", "inspect", "--format", "{{json .Config.Labels}}", ref],
        env=docker.env,
        check=False,
    )
    if result.returncode != 0:
        return {}
    labels: dict[str, str] = json.loads(result.stdout) or {}
    return labels


def _import_scratch_image(docker: Docker, ref: str, files: dict[str, Path], key: str) -> None:
    """An image of ``files`` (the same source twice becomes a hard link, stored once), /tmp, and
    the passwd/group entries of distroless (root, nonroot), run as nonroot from /."""
    scratch = CACHE_ROOT / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    etc = {
        "etc/passwd": b"root:x:0:0:root:/root:/sbin/nologin\n"
        b"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
        "etc/group": b"root:x:0:\nnonroot:x:65532:\n",
    }
    with tempfile.NamedTemporaryFile(dir=scratch, suffix=".tar") as archive:
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for name, mode in (("etc", 0o755), ("tmp", 0o1777)):
                info = tarfile.TarInfo(name)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
                tar.addfile(info)
            for name, data in etc.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
            first: dict[Path, str] = {}
            for name, source in files.items():
                arcname = name.lstrip("/")
                if source in first:
                    info = tarfile.TarInfo(arcname)
                    info.type, info.linkname = tarfile.LNKTYPE, first[source]
                    info.mode, info.mtime = 0o755, 0
                    tar.addfile(info)
                    continue
                first[source] = arcname
                info = tar.gettarinfo(str(source), arcname=arcname)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode, info.mtime = 0o755, 0
                with source.open("rb") as f:
                    tar.addfile(info, f)
        archive.flush()
        changes = [f"USER {NONROOT}:{NONROOT}", "WORKDIR /", f"LABEL aiagent.local/source={key}"]
        args = [DOCKER_CLI, "import"]
        for change in changes:
            args += ["--change", change]
        run([*args, archive.name, ref], env=docker.env, timeout=600)
