"""The images the local cluster runs, all built on this machine (no registry is reachable).

- ``base``: a stand-in for ``python:3.11-slim`` (debootstrap'd Debian bookworm, whose python3 is
  3.11, with pip and venv, and this machine's extra CAs so pip works behind a re-signing proxy).
  Our Dockerfiles keep their official default base; the harness passes this one as
  ``--build-arg PYTHON_IMAGE=...``.
- ``docker/dockerfile:<syntax>``: BuildKit's Dockerfile frontend, built from Go modules, so the
  ``# syntax=`` line of our Dockerfiles resolves locally and they build unchanged.
- ``pause``: the pod sandbox image, from the ``pause.c`` that ships inside ``k8s.io/kubernetes``.
- the product: ``Dockerfile.agent`` (every framework: crewai, langchain and openai-agents; and
  langchain only) and ``Dockerfile.operator``, with a real BuildKit build.

Each stand-in is tagged with a hash of what it is made from, so it is rebuilt only when that
changes; the product images rebuild through BuildKit's layer cache (seconds when nothing changed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import binaries
from .docker import Docker
from .mounts import unmount_under
from .paths import CACHE_ROOT, REPO
from .procs import ClusterError, run

if TYPE_CHECKING:
    from .node import RealNode

VERSION = "0.1.0"
AGENT_IMAGE = f"aiagent-operator/agent-runtime:{VERSION}"
AGENT_LANGCHAIN_IMAGE = f"aiagent-operator/agent-runtime:{VERSION}-langchain"
OPERATOR_IMAGE = f"aiagent-operator/operator:{VERSION}"
PAUSE_IMAGE = "localhost/aiagent-local/pause:3.10"

DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_SUITE = "bookworm"  # its python3 is 3.11, the version requirements/dev.lock is resolved for
BASE_PACKAGES = ["python3", "python3-pip", "python3-venv", "ca-certificates"]
HOST_CAS = Path("/usr/local/share/ca-certificates")


@dataclasses.dataclass(frozen=True)
class Product:
    """One image built from one of our Dockerfiles."""

    tag: str
    dockerfile: str
    build_args: tuple[tuple[str, str], ...] = ()


PRODUCTS = (
    Product(AGENT_IMAGE, "Dockerfile.agent"),
    Product(AGENT_LANGCHAIN_IMAGE, "Dockerfile.agent", (("FRAMEWORKS", "langchain"),)),
    Product(OPERATOR_IMAGE, "Dockerfile.operator"),
)


def log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def _key(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:12]


def _host_cas() -> list[Path]:
    return sorted(HOST_CAS.glob("*.crt")) if HOST_CAS.is_dir() else []


def base_tag() -> str:
    recipe = json.dumps([BASE_SUITE, BASE_PACKAGES, DEBIAN_MIRROR, 2])
    cas = b"".join(p.read_bytes() for p in _host_cas())
    return f"aiagent-local/python:3.11-{BASE_SUITE}-{_key(recipe, cas)}"


def build_base(docker: Docker) -> str:
    """The stand-in base image, built once per recipe (debootstrap: a few minutes cold)."""
    tag = base_tag()
    if docker.image_id(tag):
        return tag
    if not shutil.which("debootstrap"):
        raise ClusterError("debootstrap is missing (Debian package debootstrap)")
    log(f"building the stand-in base {tag} with debootstrap (a few minutes)")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="base-", dir=_scratch()))
    root = work / "rootfs"
    try:
        run(
            ["debootstrap", "--variant=minbase", BASE_SUITE, str(root), DEBIAN_MIRROR],
            timeout=1800,
        )
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        chroot = ["chroot", str(root)]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"}
        run([*chroot, "apt-get", "update", "-qq"], env=env, timeout=900)
        run(
            [*chroot, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *BASE_PACKAGES],
            env=env,
            timeout=1800,
        )
        # Outbound HTTPS here is re-signed by a local CA; pip inside builds must trust it.
        for ca in _host_cas():
            shutil.copy(ca, root / "usr/local/share/ca-certificates" / ca.name)
        run([*chroot, "update-ca-certificates"], env=env)
        run([*chroot, "apt-get", "clean"], env=env)
        # Like the official image: pip installs into the system interpreter, `python` and `pip`.
        for managed in (root / "usr/lib").glob("python3*/EXTERNALLY-MANAGED"):
            managed.unlink()
        (root / "usr/local/bin/python").symlink_to("/usr/bin/python3")
        (root / "usr/local/bin/pip").symlink_to("/usr/bin/pip3")
        shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
        (root / "etc/resolv.conf").write_text("")
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(root), "-c", "."], stdout=subprocess.PIPE
        )
        result = subprocess.run(
            [
                "/usr/bin/docker",
                "import",
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change",
                "ENV LANG=C.UTF-8",
                "--change",
                'CMD ["python3"]',
                "-",
                tag,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            env=docker.env,
        )
        tar.wait()
        if result.returncode != 0 or tar.returncode != 0:
            raise ClusterError(f"docker import of the base failed: {result.stderr.strip()}")
    finally:
        unmount_under(work)  # debootstrap mounts /proc and /sys inside; a failure can leave them
        shutil.rmtree(work, ignore_errors=True)
    log(f"base {tag} built in {time.monotonic() - started:.0f}s")
    return tag


def _import_single_file(
    docker: Docker, tag: str, files: dict[str, Path], changes: list[str]
) -> None:
    """An image of a few files, made with `docker import` (no builder, no base image)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, source in files.items():
            info = tar.gettarinfo(str(source), arcname=name)
            info.uid = info.gid = 0
            info.mode = 0o755
            with source.open("rb") as f:
                tar.addfile(info, f)
    args = ["/usr/bin/docker", "import"]
    for change in changes:
        args += ["--change", change]
    result = subprocess.run(
        [*args, "-", tag], input=buf.getvalue(), capture_output=True, env=docker.env
    )
    if result.returncode != 0:
        raise ClusterError(f"docker import {tag} failed: {result.stderr.decode().strip()}")


def frontend_tag() -> str:
    return f"docker/dockerfile:{binaries.versions()['DOCKERFILE_SYNTAX']}"


def build_frontend(docker: Docker) -> str:
    """BuildKit's Dockerfile frontend as the image our `# syntax=` line names."""
    tag = frontend_tag()
    binary = binaries.dockerfile_frontend()
    wanted = f"aiagent.local/source={_key(binary.read_bytes())}"
    current = run(
        ["/usr/bin/docker", "image", "inspect", "--format", "{{json .Config.Labels}}", tag],
        env=docker.env,
        check=False,
    )
    if current.returncode == 0 and wanted.split("=")[1] in current.stdout:
        return tag
    log(f"making {tag} from BuildKit {binaries.versions()['BUILDKIT_VERSION']}")
    _import_single_file(
        docker,
        tag,
        {"bin/dockerfile-frontend": binary},
        [
            'ENTRYPOINT ["/bin/dockerfile-frontend"]',
            f"LABEL {wanted}",
            'LABEL moby.buildkit.frontend.network.none="true"',
        ],
    )
    return tag


def build_pause(docker: Docker) -> str:
    """The pause image: a static build of Kubernetes' own pause.c in an otherwise empty image."""
    source = binaries.kubernetes_source() / "build/pause/linux/pause.c"
    wanted = _key(source.read_bytes())
    current = run(
        ["/usr/bin/docker", "image", "inspect", "--format", "{{json .Config.Labels}}", PAUSE_IMAGE],
        env=docker.env,
        check=False,
    )
    if current.returncode == 0 and wanted in current.stdout:
        return PAUSE_IMAGE
    if not shutil.which("gcc"):
        raise ClusterError("gcc is missing (needed to build the pause image)")
    log(f"making {PAUSE_IMAGE} from {source}")
    with tempfile.TemporaryDirectory(dir=_scratch()) as tmp:
        binary = Path(tmp) / "pause"
        run(["gcc", "-Os", "-static", "-DVERSION=v3.10-local", "-o", str(binary), str(source)])
        run(["strip", str(binary)])
        _import_single_file(
            docker,
            PAUSE_IMAGE,
            {"pause": binary},
            ['ENTRYPOINT ["/pause"]', "USER 65535:65535", f"LABEL aiagent.local/source={wanted}"],
        )
    return PAUSE_IMAGE


def build_products(
    docker: Docker, base: str, products: tuple[Product, ...] = PRODUCTS
) -> dict[str, float]:
    """`docker build` each of our Dockerfiles, unchanged, on the stand-in base; seconds each."""
    took: dict[str, float] = {}
    for product in products:
        started = time.monotonic()
        log(f"docker build -f {product.dockerfile} -t {product.tag}")
        args = [
            "build",
            "--network=host",
            "--progress=plain",
            "-f",
            str(REPO / product.dockerfile),
            "-t",
            product.tag,
            "--build-arg",
            f"PYTHON_IMAGE={base}",
        ]
        for name, value in product.build_args:
            args += ["--build-arg", f"{name}={value}"]
        docker(*args, str(REPO), timeout=3600)
        took[product.tag] = round(time.monotonic() - started, 1)
    return took


def _build_everything(docker: Docker) -> dict[str, float]:
    """The stand-ins, then our images on them; returns seconds per product image."""
    base = build_base(docker)
    build_frontend(docker)
    build_pause(docker)
    return build_products(docker, base)


def build_all() -> dict[str, object]:
    """Build (or reuse) every image; returns the timings and sizes, for `make images` to print."""
    from .docker import engine

    started = time.monotonic()
    with engine() as docker:
        took = _build_everything(docker)
        sizes = {
            p.tag: int(docker("image", "inspect", "--format", "{{.Size}}", p.tag).strip())
            for p in PRODUCTS
        }
    return {
        "seconds": round(time.monotonic() - started, 1),
        "build_seconds": took,
        "size_bytes": sizes,
        "base": base_tag(),
    }


def prepare(
    node: RealNode, extra: Sequence[Callable[[Docker], list[str]]] = ()
) -> dict[str, object]:
    """Build (or reuse) every image and import into the node's containerd what it lacks.

    ``extra``: more builders run on the same engine, each returning the references it built or
    reused, which are imported too (e.g. ``daprbuild.build_dapr_images`` when Dapr is asked for).
    """
    from .docker import engine

    started = time.monotonic()
    with engine() as docker:
        took = _build_everything(docker)
        tags = [PAUSE_IMAGE, *(p.tag for p in PRODUCTS)]
        for build in extra:
            tags += build(docker)
        imported = load_into_node(docker, node, tags)
    if imported:
        log(f"imported into the node: {', '.join(imported)}")
    return {"seconds": round(time.monotonic() - started, 1), "build_seconds": took}


def load_into_node(docker: Docker, node: RealNode, tags: Sequence[str]) -> list[str]:
    """`docker save | ctr import` each of ``tags`` whose image ID the node has not imported yet;
    returns the ones imported."""
    imported = []
    for tag in tags:
        image_id = docker.image_id(tag)
        if not image_id:
            raise ClusterError(f"image {tag} is not in the build engine")
        archive = _scratch() / (tag.replace("/", "_").replace(":", "_") + ".tar")
        if node.needs_image(archive.name, image_id):
            docker("save", "-o", str(archive), tag, timeout=1800)
            node.load_image(archive, image_id)
            archive.unlink()
            imported.append(tag)
    return imported


def _scratch() -> Path:
    path = CACHE_ROOT / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path
