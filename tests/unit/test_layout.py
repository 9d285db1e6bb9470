"""The layout rules ARCHITECTURE.md sets, checked so they stay true."""

from __future__ import annotations

import ast
import operator
from pathlib import Path

from .conftest import REPO


def test_operator_folder_is_not_a_package() -> None:
    assert not (REPO / "operator" / "__init__.py").exists()
    assert hasattr(operator, "itemgetter"), "`import operator` must be the standard library"


def imports_of(package: Path) -> set[str]:
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    return names


def test_runtime_never_imports_the_operator() -> None:
    assert not {n for n in imports_of(REPO / "agent_runtime") if n.startswith("aiagent_operator")}


def test_operator_uses_only_the_runtime_config() -> None:
    runtime = {n for n in imports_of(REPO / "operator") if n.startswith("agent_runtime")}
    assert runtime == {"agent_runtime.config"}


def test_frameworks_are_not_imported_at_module_level() -> None:
    for module in ("crewai", "langchain", "agents"):
        assert not {n for n in imports_of(REPO / "operator") if n.startswith(module)}


def test_demo_and_local_cluster_never_import_tests() -> None:
    """`make demo` is the product's main job: what it runs lives outside tests/."""
    for folder in ("hack", "localcluster"):
        assert not {n for n in imports_of(REPO / folder) if n.split(".")[0] == "tests"}, folder
