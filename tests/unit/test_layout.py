"""The layout rules ARCHITECTURE.md sets, checked so they stay true."""

from __future__ import annotations

import ast
import operator
from pathlib import Path

from .conftest import REPO


def test_operator_folder_is_not_a_package() -> None:
    assert not (REPO / "operator" / "__init__.py").exists()
    assert hasattr(operator, "itemgetter"), "`import operator` must be the standard library"


def imports_of_file(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def imports_of(package: Path) -> set[str]:
    return set().union(*(imports_of_file(path) for path in package.rglob("*.py")))


def test_runtime_never_imports_the_operator() -> None:
    """Save one module: `aiagent invoke/chat/status` (cluster.py) read a kubeconfig as the
    operator does, with its `credentials`, which is plain Python (no Kopf, nothing the runtime
    image lacks) and imported only when one of those commands runs."""
    runtime = REPO / "agent_runtime"
    cluster = runtime / "cluster.py"
    others = set().union(*(imports_of_file(p) for p in runtime.rglob("*.py") if p != cluster))
    assert not {n for n in others if n.startswith("aiagent_operator")}
    assert {n for n in imports_of_file(cluster) if n.startswith("aiagent_operator")} <= {
        "aiagent_operator.credentials"
    }
    credentials = REPO / "operator" / "aiagent_operator" / "credentials.py"
    assert not {n for n in imports_of_file(credentials) if n.startswith(("kopf", "aiagent"))}


def test_operator_uses_only_the_runtime_config() -> None:
    runtime = {n for n in imports_of(REPO / "operator") if n.startswith("agent_runtime")}
    assert runtime == {"agent_runtime.config"}


FRAMEWORK_MODULES = ("crewai", "langchain", "agents")  # agents: the OpenAI Agents SDK


def is_framework(name: str) -> bool:
    return name.split(".")[0].split("_")[0] in FRAMEWORK_MODULES


def test_frameworks_are_not_imported_at_module_level() -> None:
    assert not {n for n in imports_of(REPO / "operator") if is_framework(n)}


def test_runtime_imports_a_framework_only_in_its_adapter() -> None:
    """Only the adapter the config selects pulls a framework in (and providers.py, inside the
    function that builds that framework's model)."""
    adapters = REPO / "agent_runtime" / "adapters"
    allowed = {
        adapters / "crewai.py": {"crewai"},
        adapters / "langchain.py": {"langchain"},
        adapters / "openai_agents.py": {"agents"},
        REPO / "agent_runtime" / "providers.py": {"crewai", "langchain"},
    }
    for path in (REPO / "agent_runtime").rglob("*.py"):
        frameworks = {n.split(".")[0].split("_")[0] for n in imports_of_file(path)}
        assert frameworks & set(FRAMEWORK_MODULES) <= allowed.get(path, set()), path


def test_demo_and_local_cluster_never_import_tests() -> None:
    """`make demo` is the product's main job: what it runs lives outside tests/."""
    for folder in ("hack", "localcluster"):
        assert not {n for n in imports_of(REPO / folder) if n.split(".")[0] == "tests"}, folder
