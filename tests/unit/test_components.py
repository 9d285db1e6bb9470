"""Dapr Components an AIAgent declares inline, and what a Component found in the cluster means."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from aiagent_operator import api, components, render

AgentFactory = Callable[..., api.AIAgent]

BASE = {"framework": "langchain", "model": {"name": "gpt-4o-mini"}}
REDIS = {
    "name": "agent-memory",
    "type": "state.redis",
    "metadata": [
        {"name": "redisHost", "value": "10.245.0.1:6379"},
        {"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "password"}},
    ],
}


def spec(**dapr: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(BASE)), "dapr": dapr}


def test_inline_state_store_becomes_a_scoped_owned_component(
    agent_factory: AgentFactory,
) -> None:
    agent = agent_factory(spec(stateStore=REDIS))
    (component,) = components.render_components(agent)
    assert component["apiVersion"] == "dapr.io/v1alpha1" and component["kind"] == "Component"
    meta = component["metadata"]
    assert (meta["name"], meta["namespace"]) == ("agent-memory", "team-a")
    assert meta["labels"] == render.common_labels(agent)
    assert meta["ownerReferences"] == [render.owner_reference(agent)]
    assert meta["ownerReferences"][0]["controller"] is True
    assert component["spec"] == {
        "type": "state.redis",
        "version": "v1",  # the default
        "metadata": [
            {"name": "redisHost", "value": "10.245.0.1:6379"},
            # Dapr's own reference shape; with no auth.secretStore Dapr reads the Kubernetes
            # Secret itself (its built-in store): the value never passes through the operator.
            {"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "password"}},
        ],
    }
    assert "auth" not in component
    assert component["scopes"] == ["support-bot"]


def test_scope_follows_the_app_id_and_version_is_kept(agent_factory: AgentFactory) -> None:
    pubsub = {"name": "bus", "type": "pubsub.redis", "version": "v2", "metadata": []}
    agent = agent_factory(spec(appId="helpdesk", pubsub=pubsub))
    (component,) = components.render_components(agent)
    assert component["scopes"] == ["helpdesk"]
    assert component["spec"] == {"type": "pubsub.redis", "version": "v2", "metadata": []}


def test_only_inline_components_are_rendered(agent_factory: AgentFactory) -> None:
    agent = agent_factory(
        spec(stateStore={"name": "existing-store"}, pubsub={"name": "bus", "type": "pubsub.redis"})
    )
    assert [c["metadata"]["name"] for c in components.render_components(agent)] == ["bus"]
    assert components.component_refs(agent)[0][0] == "spec.dapr.stateStore"
    assert [f for f, _ in components.component_refs(agent)] == [
        "spec.dapr.stateStore",
        "spec.dapr.pubsub",
    ]


def test_no_components_while_dapr_is_off(agent_factory: AgentFactory) -> None:
    agent = agent_factory(spec(enabled=False, stateStore=REDIS))
    assert components.render_components(agent) == []
    assert components.component_refs(agent) == []


def test_no_secret_value_and_no_secret_in_the_runtime_config(
    agent_factory: AgentFactory,
) -> None:
    agent = agent_factory(spec(stateStore=REDIS))
    text = json.dumps(components.render_components(agent))
    assert "secretKeyRef" in text and '"value"' in text  # the reference, and only the literal
    assert text.count('"value"') == 1


def test_components_are_pure(agent_factory: AgentFactory) -> None:
    agent = agent_factory(spec(stateStore=REDIS))
    before = agent.model_dump()
    assert components.render_components(agent) == components.render_components(agent)
    assert agent.model_dump() == before


def seen(
    type_: str = "state.redis",
    scopes: tuple[str, ...] = (),
    uid: str | None = None,
    controller: str | None = None,
) -> components.SeenComponent:
    return components.SeenComponent(
        type=type_, scopes=scopes, controller_uid=uid, controller=controller
    )


def test_seen_component_reads_type_scopes_and_controller() -> None:
    body = {
        "metadata": {
            "name": "agent-memory",
            "ownerReferences": [
                {"kind": "Deployment", "name": "x", "uid": "u0"},
                {"kind": "AIAgent", "name": "first", "uid": "u1", "controller": True},
            ],
        },
        "spec": {"type": "state.redis", "metadata": [{"name": "redisPassword", "value": "hush"}]},
        "scopes": ["first"],
    }
    found = components.seen_component(body)
    assert found == seen(scopes=("first",), uid="u1", controller="AIAgent first")
    assert "hush" not in repr(found)  # metadata values are never kept
    assert components.seen_component({"metadata": {}, "spec": {"type": "state.x"}}) == seen(
        "state.x"
    )


@pytest.mark.parametrize(
    ("dapr", "found", "verdict", "reason", "fragments"),
    [
        ({"stateStore": {"name": "agent-memory"}}, None, "Missing", "ComponentMissing",
         ["Component 'agent-memory' named by spec.dapr.stateStore does not exist in namespace "
          "team-a", "set spec.dapr.stateStore.type"]),
        ({"stateStore": REDIS}, None, "Missing", "ComponentMissing", ["does not exist", "yet"]),
        ({"stateStore": REDIS}, seen(uid="other", controller="AIAgent first"), "Conflict",
         "ComponentConflict",
         ["Component 'agent-memory' named by spec.dapr.stateStore already exists in namespace "
          "team-a, managed by AIAgent first", "choose another spec.dapr.stateStore.name"]),
        ({"stateStore": REDIS}, seen(), "Conflict", "ComponentConflict",
         ["not managed by this AIAgent"]),
        ({"pubsub": {"name": "bus"}}, seen("state.redis"), "WrongType", "ComponentWrongType",
         ["type 'state.redis'", "spec.dapr.pubsub needs a pubsub.* component"]),
        ({"stateStore": {"name": "agent-memory"}}, seen(scopes=("billing",)), "NotScoped",
         "ComponentNotScoped", ["scoped to [billing], not to app id 'support-bot'"]),
    ],
)  # fmt: skip
def test_judge(
    agent_factory: AgentFactory,
    dapr: dict[str, Any],
    found: components.SeenComponent | None,
    verdict: str,
    reason: str,
    fragments: list[str],
) -> None:
    agent = agent_factory(spec(**dapr))
    ((field, ref),) = components.component_refs(agent)
    fact = components.judge(agent, field, ref, found)
    assert fact.verdict == verdict
    problem = fact.problem(agent.namespace, render.dapr_app_id(agent))
    assert problem is not None and problem[0] == reason
    for fragment in fragments:
        assert fragment in problem[1]


def test_judge_usable_components(agent_factory: AgentFactory) -> None:
    agent = agent_factory(spec(stateStore=REDIS, pubsub={"name": "bus"}))
    (state_field, state), (bus_field, bus) = components.component_refs(agent)
    ours = seen(uid=agent.uid, controller="AIAgent support-bot")
    assert components.judge(agent, state_field, state, ours).verdict == "Ok"
    scoped = seen("pubsub.kafka", scopes=("support-bot", "other"))
    fact = components.judge(agent, bus_field, bus, scoped)
    assert fact.verdict == "Ok" and fact.problem("team-a", "support-bot") is None


def test_no_dapr_api(agent_factory: AgentFactory) -> None:
    agent = agent_factory(spec(stateStore=REDIS))
    ((field, ref),) = components.component_refs(agent)
    problem = components.no_dapr_api(field, ref).problem("team-a", "support-bot")
    assert problem is not None
    assert problem[0] == "DaprNotInstalled"
    assert "Component 'agent-memory' named by spec.dapr.stateStore cannot be created" in problem[1]
    assert "no components.dapr.io API" in problem[1]


def test_an_agent_stored_with_the_old_string_form_still_reads(agent_factory: AgentFactory) -> None:
    # The CRD refuses `stateStore: name` now; objects stored before it must not break the operator.
    agent = agent_factory(spec(stateStore="statestore", pubsub="bus"))
    assert [(f, r.name, r.type) for f, r in components.component_refs(agent)] == [
        ("spec.dapr.stateStore", "statestore", None),
        ("spec.dapr.pubsub", "bus", None),
    ]
    assert components.render_components(agent) == []
