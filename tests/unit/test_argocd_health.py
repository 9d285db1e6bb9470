"""The Argo CD health check (argocd/health.lua), run with lupa's Lua 5.1 (the language Argo CD's
interpreter speaks) over AIAgent objects recorded from the e2e runs (tests/e2e/test_helm_install.py
with AIAGENT_RECORD_FIXTURES=1)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa.lua51 import LuaRuntime

REPO = Path(__file__).resolve().parents[2]
HEALTH_LUA = REPO / "argocd" / "health.lua"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "argocd"
HEALTH_KEY = "resource.customizations.health.aiagents.dev_AIAgent"

# Recorded state -> (Argo CD health, a piece of the message it must carry).
EXPECTED = {
    "no-status": ("Progressing", "Waiting for the operator"),
    "ready": ("Healthy", "replicas ready"),
    "progressing-generation": ("Progressing", "apply generation"),
    "progressing-scale-up": ("Progressing", ""),
    "pending-secret-not-found": ("Progressing", "not found"),
    "degraded-replica-failure": ("Degraded", "serviceaccount"),
    "failed-child-refused": ("Degraded", "Deployment"),
}


def argocd_health(obj: dict[str, Any]) -> dict[str, str]:
    """What Argo CD would show for `obj`: the script's `hs` table as a dict."""
    lua = LuaRuntime()
    # Argo CD hands the script the object as nested tables (JSON arrays become 1-based tables).
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(HEALTH_LUA.read_text())
    return {"status": str(result["status"]), "message": str(result["message"] or "")}


def load_fixture(state: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((FIXTURES / f"{state}.yaml").read_text())
    return obj


def test_every_recorded_state_has_an_expectation() -> None:
    recorded = {p.stem for p in FIXTURES.glob("*.yaml")}
    assert recorded == set(EXPECTED), "record the fixtures again, or add the new state here"


@pytest.mark.parametrize("state", sorted(EXPECTED))
def test_recorded_state(state: str) -> None:
    obj = load_fixture(state)
    assert obj["kind"] == "AIAgent" and obj["metadata"]["uid"], "fixtures are real API objects"
    status, fragment = EXPECTED[state]
    health = argocd_health(obj)
    assert health["status"] == status, health
    assert fragment in health["message"], health


@pytest.mark.parametrize("state", sorted(EXPECTED))
def test_the_message_is_the_ready_condition_once_the_generation_is_applied(state: str) -> None:
    obj = load_fixture(state)
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return  # the operator has not spoken about this generation yet
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert argocd_health(obj)["message"] == ready["message"]


def test_ready_but_not_for_the_current_generation_is_progressing() -> None:
    obj = copy.deepcopy(load_fixture("ready"))
    obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1
    health = argocd_health(obj)
    assert health["status"] == "Progressing" and "apply generation" in health["message"]


def test_ready_false_in_phase_ready_is_not_healthy() -> None:
    # The condition is the authority; a phase alone never makes an agent Healthy.
    obj = copy.deepcopy(load_fixture("ready"))
    obj["status"]["conditions"][0]["status"] = "False"
    assert argocd_health(obj)["status"] == "Progressing"


def test_dapr_ready_false_leaves_a_ready_agent_healthy() -> None:
    # DaprReady reports the sidecars and Components beside Ready; health follows Ready alone.
    obj = copy.deepcopy(load_fixture("ready"))
    dapr = {
        "type": "DaprReady",
        "status": "False",
        "reason": "SidecarNotInjected",
        "message": "2/2 pods run without a daprd container",
    }
    obj["status"]["conditions"].append(dapr)
    ready = obj["status"]["conditions"][0]
    assert argocd_health(obj) == {"status": "Healthy", "message": ready["message"]}
    obj["status"]["conditions"].reverse()  # wherever it sits in the list
    assert argocd_health(obj)["status"] == "Healthy"


def test_failed_without_a_message_still_says_why() -> None:
    obj = copy.deepcopy(load_fixture("failed-child-refused"))
    obj["status"]["conditions"] = []
    assert argocd_health(obj) == {"status": "Degraded", "message": "AIAgent is Failed"}


def test_argocd_cm_patch_embeds_exactly_health_lua() -> None:
    patch = yaml.safe_load((REPO / "argocd" / "argocd-cm-patch.yaml").read_text())
    assert patch["metadata"]["name"] == "argocd-cm"
    assert patch["data"][HEALTH_KEY] == HEALTH_LUA.read_text()


def test_sample_applications_point_at_what_exists() -> None:
    apps = {p.name: yaml.safe_load(p.read_text()) for p in (REPO / "argocd").glob("app*.yaml")}
    assert {"application-operator.yaml", "application-agents.yaml"} <= set(apps)
    for name, app in apps.items():
        assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application"), name
        source = app["spec"]["source"]
        assert (REPO / source["path"]).is_dir(), f"{name}: no folder {source['path']}"
        assert app["spec"]["destination"]["server"] or app["spec"]["destination"]["name"]
    operator = apps["application-operator.yaml"]
    assert (REPO / operator["spec"]["source"]["path"] / "Chart.yaml").exists()
    # Deleting the Application must not cascade to the CRD (and so to every AIAgent).
    assert not operator["metadata"].get("finalizers")
