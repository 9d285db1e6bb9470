"""The two Dockerfiles: hadolint, the shape of the images, and (no container engine here) their
install steps run for real: the builder's `pip wheel` and the final stage's `pip install`, taken
from the Dockerfile itself, into fresh virtualenvs, then the entry points imported from them."""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aiagent_operator import render
from aiagent_operator.settings import OperatorSettings
from localcluster.paths import CACHE_ROOT

from .conftest import REPO, make_agent

HADOLINT = Path(sys.executable).parent / "hadolint"
OCI_LABELS = {"title", "description", "version", "revision", "source", "licenses"}
REPLAY_LAYERS = CACHE_ROOT / "dockerfile-replay"  # builder RUN steps' wheels, by cache key
FINAL_PREFIX = "final-"  # ...and the final stage's installed environments, by theirs


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]  # ARG defaults, global and per stage
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def expand(self, text: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: self.args[m.group(1)], text)


def parse(path: Path) -> Dockerfile:
    """Instructions with continuation lines joined and comments dropped; stages split at FROM."""
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), " ".join(rest.split())
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(base=base, name=name or None))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(args=args, stages=stages)


OPERATOR = parse(REPO / "Dockerfile.operator")
AGENT = parse(REPO / "Dockerfile.agent")
BOTH = pytest.mark.parametrize("image", [OPERATOR, AGENT], ids=["operator", "agent"])


@pytest.mark.parametrize("name", ["Dockerfile.operator", "Dockerfile.agent"])
def test_hadolint_passes(name: str) -> None:
    result = subprocess.run([str(HADOLINT), "--no-color", str(REPO / name)], capture_output=True)
    assert result.returncode == 0, result.stdout.decode()


def test_hadolint_does_find_problems(tmp_path: Path) -> None:
    """The linter is live: an unpinned base image and an unpinned pip install fail it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = subprocess.run([str(HADOLINT), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3013" in result.stdout


@BOTH
def test_multi_stage_with_wheels_from_the_builder(image: Dockerfile) -> None:
    builder, final = image.stages[0], image.final
    assert len(image.stages) == 2 and builder.name == "builder"
    assert image.expand(builder.base) == image.expand(final.base)
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", image.expand(final.base))
    # The dependencies from the lock alone (a layer no source change touches), then our wheel.
    dependencies, ours = [run for run in builder.all("RUN") if "pip wheel" in run]
    assert dependencies.endswith(" -r requirements/dev.lock") and "--no-deps" in dependencies
    assert ours.endswith(" .") and "--no-deps" in ours
    assert all("--no-cache-dir" in run for run in (dependencies, ours))
    copies = builder.all("COPY")
    assert copies[0] == "requirements/dev.lock requirements/", "the lock comes in alone, first"
    (install,) = final.all("RUN")[-1:]
    # Only the builder's wheels, bind-mounted (never a layer), no index, no cache.
    assert install.startswith("--mount=type=bind,from=builder,source=/wheels,target=/wheels")
    assert "--no-index" in install and "--no-cache-dir" in install
    # Only what the image's extras need, from all the lock's wheels.
    assert re.search(r'--constraint /requirements/dev.lock "aiagent-operator\[[^]]+\]"$', install)
    assert not any("/wheels" in copy for copy in final.all("COPY"))
    # No compilers, package managers' caches or sources in the final image.
    final_text = " ".join(args for _, args in final.instructions)
    for banned in ("apt-get", "gcc", "build-essential", "COPY operator", "COPY agent_runtime"):
        assert banned not in final_text


@BOTH
def test_final_image_runs_as_a_numeric_non_root_user(image: Dockerfile) -> None:
    (user,) = image.final.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0
    # The operator runs agent pods as this UID; the charts run the operator as it too.
    assert int(uid) == render.RUNTIME_UID
    assert not any(kw == "HEALTHCHECK" for stage in image.stages for kw, _ in stage.instructions)


@BOTH
def test_oci_labels(image: Dockerfile) -> None:
    labels = " ".join(image.final.all("LABEL"))
    found = set(re.findall(r"org\.opencontainers\.image\.(\w+)=", labels))
    assert OCI_LABELS <= found


def test_operator_entry_point() -> None:
    assert OPERATOR.final.all("ENTRYPOINT") == ['["aiagent-operator"]']
    # The liveness and metrics endpoints the operator serves by default are the ports exposed.
    ports = [
        OperatorSettings.model_fields[field].default.split(":")[-1].split("/")[0]
        for field in ("liveness_endpoint", "metrics_endpoint")
    ]
    assert OPERATOR.final.all("EXPOSE") == [" ".join(ports)]


def test_agent_image_runs_what_the_operator_asks() -> None:
    assert AGENT.final.all("ENTRYPOINT") == ['["aiagent"]']
    deployment = next(
        c
        for c in render.render_children(make_agent(), OperatorSettings(peering_priority=1))
        if c["kind"] == "Deployment"
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    cmd = AGENT.final.all("CMD")[0]
    assert cmd == "[" + ", ".join(f'"{arg}"' for arg in container["args"]) + "]"
    assert "command" not in container, "the pod relies on the image's ENTRYPOINT"
    assert AGENT.final.all("EXPOSE") == [str(render.HTTP_PORT)]
    env = " ".join(AGENT.final.all("ENV"))
    assert "HOME=/tmp" in env  # the root filesystem is read-only; /tmp is the pod's emptyDir
    assert "OPENAI_AGENTS_DISABLE_TRACING=true" in env  # no trace export to OpenAI (no egress)


def test_agent_frameworks_build_arg_names_real_extras() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    frameworks = AGENT.args["FRAMEWORKS"].split(",")
    assert frameworks == ["crewai", "langchain", "openai-agents"]
    assert set(frameworks) <= set(extras)
    assert "operator" not in frameworks  # kopf/kubernetes stay out of the agent image


def excluded(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last matching pattern wins;
    a pattern matching a folder matches everything inside)."""
    parts = path.split("/")
    ancestors = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch(a, pattern) for a in ancestors):
            result = not negated
    return result


def test_dockerignore_lets_in_exactly_what_the_images_copy() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for image in (OPERATOR, AGENT):
        for copy in image.stages[0].all("COPY"):
            *sources, _ = copy.split()
            for source in sources:
                files = list((REPO / source).rglob("*.py")) if source.endswith("/") else []
                for path in files or [REPO / source]:
                    relative = str(path.relative_to(REPO))
                    assert not excluded(relative, patterns), relative
    for kept_out in (".venv/bin/python", ".git/HEAD", "tests/unit/test_chart.py", "crds/x.yaml"):
        assert excluded(kept_out, patterns), kept_out
    assert excluded("operator/aiagent_operator/__pycache__/api.cpython-311.pyc", patterns)


def run_like_docker(image: Dockerfile, tmp: Path) -> Path:
    """Run the image's builder stage (WORKDIR, COPY, the pip wheel RUNs) and the final stage's
    pip install, with /wheels and the builder's Python mapped to folders here; returns the
    installed environment. Two liberties: pip may use its cache, so that a second run does not
    download everything again; and a RUN whose command and inputs are those of an earlier run
    reuses that run's result, as Docker's layer cache does: a builder RUN its wheels (the lock's,
    until the lock changes), the final install its environment (until a wheel or the lock
    changes: minutes of pip for the agent image's three frameworks, on every run otherwise)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_FIND_LINKS")}
    builder_venv, wheels = tmp / "builder", tmp / "wheels"  # the builder's Python: made if needed
    layer_keys: list[str] = []

    def shell(command: str, venv: Path, cwd: Path) -> None:
        command = image.expand(command).replace("/wheels", str(wheels))
        command = command.replace("/requirements/", f"{context}/requirements/")
        command = re.sub(r"^(--mount=\S+\s+)+", "", command).replace("--no-cache-dir ", "")
        assert command.startswith("pip "), command
        command = f"{venv}/bin/{command}"
        result = subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}{result.stderr}"

    context = tmp / "context"  # the builder's one WORKDIR
    context.mkdir()
    for keyword, args in image.stages[0].instructions:
        if keyword == "COPY":
            *sources, dest = args.split()
            for source in sources:
                if (REPO / source).is_dir():  # like COPY: the folder's contents go into dest
                    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                    shutil.copytree(REPO / source, context / dest, ignore=ignore)
                else:
                    (context / dest).mkdir(parents=True, exist_ok=True)
                    shutil.copy(REPO / source, context / dest)
        elif keyword == "RUN":
            key = hashlib.sha256(f"{args}\n{tree_digest(context)}".encode()).hexdigest()[:16]
            layer_keys.append(key)
            layer = REPLAY_LAYERS / key
            if not layer.is_dir():
                if not builder_venv.exists():
                    subprocess.run([sys.executable, "-m", "venv", str(builder_venv)], check=True)
                before = set(wheels.iterdir()) if wheels.is_dir() else set()
                shell(args, builder_venv, context)
                store_layer(layer, sorted(set(wheels.iterdir()) - before))
            wheels.mkdir(exist_ok=True)
            for built in layer.iterdir():
                if not (wheels / built.name).exists():
                    os.link(built, wheels / built.name)
    # The install's inputs: its command, the builder layers (each keyed by its own inputs) and the
    # lock it is constrained by. A venv is not relocatable, so it is made where it is kept; a
    # run cut short leaves no ".complete" and is made again.
    install = image.expand(image.final.all("RUN")[-1])  # with its ARGs' values
    lock = (context / "requirements" / "dev.lock").read_bytes()
    key = hashlib.sha256(f"{install}\n{layer_keys}".encode() + lock).hexdigest()[:16]
    image_venv = REPLAY_LAYERS / f"{FINAL_PREFIX}{key}"
    REPLAY_LAYERS.mkdir(parents=True, exist_ok=True)
    with (REPLAY_LAYERS / ".final.lock").open("w") as lock_file:  # two checkouts: one builds
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if not (image_venv / ".complete").exists():
            shutil.rmtree(image_venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(image_venv)], check=True)
            shell(install, image_venv, tmp)
            (image_venv / ".complete").touch()
            prune(lambda p: p.is_dir() and p.name.startswith(FINAL_PREFIX), keep=4)
    return image_venv


def tree_digest(root: Path) -> str:
    """The names and contents of every file under ``root``: what a RUN step's cache key hangs on."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root)}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def store_layer(layer: Path, files: list[Path], keep: int = 6) -> None:
    """Keep a RUN step's wheels under its key (hard links, same filesystem or copies), and only
    the newest few steps' (each lock's wheels are hundreds of MB). Two checkouts storing the
    same step at once each fill a directory of their own; the first rename wins."""
    layer.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=layer.name + ".", suffix=".partial", dir=layer.parent))
    for path in files:
        try:
            os.link(path, partial / path.name)
        except OSError:
            shutil.copy2(path, partial / path.name)
    try:
        partial.rename(layer)
    except OSError:  # stored meanwhile by the other checkout: the same files
        shutil.rmtree(partial, ignore_errors=True)
    prune(
        lambda p: (
            p.is_dir() and not p.name.endswith(".partial") and not p.name.startswith(FINAL_PREFIX)
        ),
        keep,
    )


def prune(kind: Callable[[Path], bool], keep: int) -> None:
    """Remove all but the newest ``keep`` replay layers of one kind."""
    layers = sorted(
        (p for p in REPLAY_LAYERS.iterdir() if kind(p)), key=lambda p: p.stat().st_mtime
    )
    for old in layers[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def installed(venv: Path) -> set[str]:
    """name==version of every distribution in the venv but the project and the venv's own pip."""
    listing = subprocess.run(
        [f"{venv}/bin/pip", "list", "--format=json"], capture_output=True, text=True, check=True
    )
    skip = {"aiagent-operator", "pip", "setuptools", "wheel"}
    return {
        normalize(f"{d['name']}=={d['version']}")
        for d in json.loads(listing.stdout)
        if normalize(d["name"] + "==").removesuffix("==") not in skip
    }


def locked() -> set[str]:
    """requirements/dev.lock: one resolution for the operator, the runtime, the frameworks and
    the test tools; each image installs a part of it, at the versions the tests run."""
    lines = (REPO / "requirements" / "dev.lock").read_text().splitlines()
    return {normalize(line) for line in lines if line and not line.startswith("#")}


def normalize(requirement: str) -> str:
    name, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}"


def python(venv: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([f"{venv}/bin/python", "-c", code], capture_output=True, text=True)


def test_operator_image_install(tmp_path: Path) -> None:
    venv = run_like_docker(OPERATOR, tmp_path)
    result = python(
        venv, "import aiagent_operator.handlers\nfrom aiagent_operator.__main__ import main"
    )
    assert result.returncode == 0, result.stderr
    assert (venv / "bin" / "aiagent-operator").exists()
    assert installed(venv) <= locked(), f"not pinned by the lock: {installed(venv) - locked()}"


def test_agent_image_install(tmp_path: Path) -> None:
    """Every framework and the runtime, from wheels only (a minute or two: they are big)."""
    venv = run_like_docker(AGENT, tmp_path)
    code = (
        "import agent_runtime.cli, crewai, langchain, langchain_openai, agents, fastapi, uvicorn\n"
        "import agent_runtime.adapters.openai_agents"  # the adapter's own imports resolve
    )
    result = python(venv, code)
    assert result.returncode == 0, result.stderr
    assert (venv / "bin" / "aiagent").exists()
    assert python(venv, "import kopf").returncode != 0, "the operator extra stays out"
    assert installed(venv) <= locked(), f"not pinned by the lock: {installed(venv) - locked()}"
