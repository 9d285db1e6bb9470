"""ModelConfigs, spec.modelRef and spec.limits, rendered: pure, no cluster. (The e2e suite shows
them on a real API server: tests/e2e/test_model_configs.py.)"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from aiagent_operator import api, events, kopf_fixes, model_configs, reconcile, render
from aiagent_operator.settings import OperatorSettings

from .conftest import make_agent

PLATFORM = "platform"


def make_config(**spec: Any) -> api.ModelConfig:
    body = {
        "metadata": {"name": "gpt", "namespace": PLATFORM, "uid": "mc-1"},
        "spec": {
            "provider": "openai-compatible",
            "name": "gpt-4o-mini",
            "baseURL": "http://models.platform.svc:8000/v1",
            "temperature": 0.2,
            "maxTokens": 512,
            "apiKeySecretRef": {"name": "openai", "key": "token"},
            "allowedNamespaces": ["team-a"],
            **spec,
        },
    }
    return api.ModelConfig.from_body(body)


def ref_agent(name: str = "support-bot", namespace: str = "team-a", **spec: Any) -> api.AIAgent:
    return make_agent(
        {
            "framework": "langchain",
            "modelRef": {"name": "gpt", "namespace": PLATFORM},
            **spec,
        },
        name=name,
        namespace=namespace,
        uid=f"uid-{namespace}-{name}",
    )


def test_exactly_one_of_model_and_model_ref() -> None:
    with pytest.raises(ValueError, match="exactly one of spec.model or spec.modelRef"):
        api.AIAgentSpec.model_validate({"framework": "langchain"})
    with pytest.raises(ValueError, match="exactly one"):
        api.AIAgentSpec.model_validate(
            {"framework": "langchain", "model": {"name": "m"}, "modelRef": {"name": "gpt"}}
        )


def test_a_model_config_is_resolved_into_the_agents_model_with_its_overrides() -> None:
    agent = ref_agent(modelRef={"name": "gpt", "namespace": PLATFORM, "temperature": 0.9})
    rendered = model_configs.effective(agent, make_config(), {(PLATFORM, "openai"): "41"})
    model = rendered.model
    assert (model.provider, model.name, model.base_url) == (
        "openai-compatible",
        "gpt-4o-mini",
        "http://models.platform.svc:8000/v1",
    )
    assert (model.temperature, model.max_tokens) == (0.9, 512)  # the agent's, the config's
    # The pod reads the copy in its own namespace, never the platform's Secret.
    assert model.api_key_secret_ref == api.SecretKeyRef(name="support-bot-model-key", key="api-key")
    assert rendered.key_source == f"{PLATFORM}/openai/token"
    assert rendered.key_source_version == "41"


@pytest.mark.parametrize(
    ("allowed", "namespace", "reason"),
    [
        (["team-a"], "team-a", None),
        (["team-a"], "team-b", "ModelConfigNotAllowed"),
        ([], PLATFORM, None),  # its own namespace always may
        (["*"], "anyone", None),
    ],
)
def test_only_allowed_namespaces_may_use_a_model_config(
    allowed: list[str], namespace: str, reason: str | None
) -> None:
    agent = ref_agent(namespace=namespace)
    config = make_config(allowedNamespaces=allowed)
    if reason is None:
        model_configs.check(agent, config)
        return
    with pytest.raises(model_configs.ModelConfigProblem) as caught:
        model_configs.effective(agent, config, {})
    assert caught.value.reason == reason
    assert f"ModelConfig {PLATFORM}/gpt does not allow namespace {namespace}" in str(caught.value)


def test_a_missing_model_config_is_named() -> None:
    with pytest.raises(model_configs.ModelConfigProblem) as caught:
        model_configs.effective(ref_agent(), None, {})
    assert caught.value.reason == "ModelConfigNotFound"
    assert caught.value.message == f"ModelConfig {PLATFORM}/gpt (spec.modelRef) not found"


def test_the_key_copy_names_its_source_and_never_holds_a_value(
    settings: OperatorSettings,
) -> None:
    rendered = model_configs.effective(ref_agent(), make_config(), {(PLATFORM, "openai"): "41"})
    children, _ = reconcile.desired(rendered, settings)
    copy = children[0]  # before the pods that read it
    assert (copy["kind"], copy["metadata"]["name"]) == ("Secret", "support-bot-model-key")
    assert "data" not in copy and "stringData" not in copy
    assert copy["metadata"]["annotations"] == {
        model_configs.SOURCE_ANNOTATION: f"{PLATFORM}/openai/token",
        model_configs.SOURCE_VERSION_ANNOTATION: "41",
    }
    assert copy["metadata"]["ownerReferences"][0]["uid"] == rendered.uid
    # The source changes: the copy's digest changes, so it is applied again.
    newer = model_configs.effective(ref_agent(), make_config(), {(PLATFORM, "openai"): "42"})
    assert render.applied_hash(reconcile.desired(newer, settings).children[0]) != (
        render.applied_hash(copy)
    )


def test_an_agent_with_its_own_model_needs_no_copy(settings: OperatorSettings) -> None:
    rendered = model_configs.effective(make_agent(), None, {("team-a", "openai"): "7"})
    kinds = [c["kind"] for c in reconcile.desired(rendered, settings).children]
    assert "Secret" not in kinds


def deployment_of(agent: api.AIAgent, settings: OperatorSettings) -> dict[str, Any]:
    return next(c for c in render.render_children(agent, settings) if c["kind"] == "Deployment")


def test_a_rotated_secret_changes_the_pod_template_and_nothing_else_does(
    settings: OperatorSettings,
) -> None:
    agent = make_agent()
    secrets = model_configs.secrets_read(agent, None)
    assert secrets == [("team-a", "openai")]

    def template(version: str | None) -> dict[str, Any]:
        rendered = model_configs.effective(agent, None, {("team-a", "openai"): version})
        return dict(deployment_of(rendered, settings)["spec"]["template"])

    annotation = render.SECRETS_VERSION_ANNOTATION
    assert template("1") == template("1")
    assert (
        template("1")["metadata"]["annotations"][annotation]
        != (template("2")["metadata"]["annotations"][annotation])
    )
    assert template("1")["spec"] == template("2")["spec"]


def test_every_secret_the_pods_read_is_followed() -> None:
    agent = make_agent(
        {
            "framework": "langchain",
            "model": {"name": "m", "apiKeySecretRef": {"name": "openai", "key": "k"}},
            "agent": {
                "mcpServers": [
                    {
                        "name": "github",
                        "url": "https://mcp.example.com/mcp",
                        "headers": [
                            {
                                "name": "Authorization",
                                "valueFrom": {"secretKeyRef": {"name": "gh", "key": "t"}},
                            }
                        ],
                    }
                ]
            },
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "extra", "key": "x"}}}],
            "envFrom": [{"secretRef": {"name": "bulk"}}],
        }
    )
    assert model_configs.secrets_read(agent, None) == [
        ("team-a", name) for name in ("bulk", "extra", "gh", "openai")
    ]
    # With a ModelConfig, the platform's Secret is followed (the copy follows it).
    assert model_configs.secrets_read(ref_agent(), make_config()) == [(PLATFORM, "openai")]


def agent_yaml(agent: api.AIAgent, settings: OperatorSettings) -> dict[str, Any]:
    configmap = next(c for c in render.render_children(agent, settings) if c["kind"] == "ConfigMap")
    doc: dict[str, Any] = yaml.safe_load(configmap["data"][render.CONFIG_FILE])
    return doc


def test_limits_reach_agent_yaml_with_each_pods_share(settings: OperatorSettings) -> None:
    spec = {
        "framework": "langchain",
        "model": {"name": "m"},
        "replicas": 3,
        "limits": {"requestsPerMinute": 60, "concurrentRequests": 6, "maxTokensPerRequest": 100},
    }
    assert agent_yaml(make_agent(spec), settings)["limits"] == {
        "requestsPerMinute": 60,
        "concurrentRequests": 6,
        "maxTokensPerRequest": 100,
        "divisor": 3,
    }
    scaled = {**spec, "autoscaling": {"enabled": True, "maxReplicas": 8}}
    assert agent_yaml(make_agent(scaled), settings)["limits"]["divisor"] == 8
    # No limits: agent.yaml stays as before limits existed, whatever the replicas.
    plain = {"framework": "langchain", "model": {"name": "m"}, "replicas": 3}
    assert "limits" not in agent_yaml(make_agent(plain), settings)


def test_a_namespace_budget_is_shared_by_the_pods_of_the_agents_that_use_it(
    settings: OperatorSettings,
) -> None:
    config = make_config(namespaceBudget={"tokensPerMinute": 9000})
    one, two = ref_agent("one", replicas=2), ref_agent("two", replicas=1)
    rendered = model_configs.effective(one, config, {}, sharing=[one, two])
    assert agent_yaml(rendered, settings)["limits"] == {
        "divisor": 2,
        "budget": {
            "name": f"modelconfig/{PLATFORM}/gpt/team-a",
            "tokensPerMinute": 9000,
            "divisor": 3,
        },
    }
    alone = model_configs.effective(one, config, {}, sharing=[one])
    assert agent_yaml(alone, settings)["limits"]["budget"]["divisor"] == 2


def test_the_runtime_learns_its_namespace_from_the_downward_api(
    settings: OperatorSettings,
) -> None:
    container = deployment_of(make_agent(), settings)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env[render.NAMESPACE_ENV]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }


def status(phase: str, ready: bool, reason: str, message: str = "") -> api.AIAgentStatus:
    condition = api.Condition(
        type="Ready", status="True" if ready else "False", reason=reason, message=message
    )
    return api.AIAgentStatus(phase=phase, conditions=[condition])  # type: ignore[arg-type]


def test_an_event_for_each_state_a_person_must_act_on_and_for_recovery() -> None:
    ready = status("Ready", True, "Ready", "1/1 replicas ready")
    missing = status("Pending", False, "ModelConfigNotFound", "ModelConfig p/gpt not found")
    rolling = status("Progressing", False, "RollingOut", "0/1 replicas updated")
    assert events.transition(ready, missing) == (
        "Warning",
        "ModelConfigNotFound",
        "ModelConfig p/gpt not found",
    )
    assert events.transition(missing, missing) is None  # no change, no event
    assert events.transition(ready, rolling) is None  # routine: nobody needs to act
    kind, reason, message = events.transition(missing, ready) or ("", "", "")
    assert (kind, reason) == ("Normal", "Ready") and "was Pending, ModelConfigNotFound" in message
    assert events.transition(rolling, ready) is None


def test_secret_values_never_reach_kopf() -> None:
    listing = {
        "kind": "SecretList",
        "items": [{"metadata": {"name": "openai"}, "data": {"token": "c2VjcmV0"}}],
    }
    event = {
        "type": "MODIFIED",
        "object": {"kind": "Secret", "metadata": {"name": "o"}, "stringData": {"k": "secret"}},
    }
    decoded = kopf_fixes._without_managed_fields(listing)
    assert decoded["items"][0]["data"] == {"token": ""}  # the keys stay: status names them
    assert kopf_fixes._without_managed_fields(event)["object"]["stringData"] == {"k": ""}
    configmap = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}
    assert kopf_fixes._without_managed_fields(configmap)["data"] == {"a": "b"}


def test_a_new_key_in_the_same_secret_is_a_new_copy(settings: OperatorSettings) -> None:
    versions = {(PLATFORM, "openai"): "41"}
    before = model_configs.effective(ref_agent(), make_config(), versions)
    moved = make_config(apiKeySecretRef={"name": "openai", "key": "token-v2"})
    after = model_configs.effective(ref_agent(), moved, versions)
    copies = [reconcile.desired(a, settings).children[0] for a in (before, after)]
    assert copies[1]["metadata"]["annotations"][model_configs.SOURCE_ANNOTATION] == (
        f"{PLATFORM}/openai/token-v2"
    )
    assert render.applied_hash(copies[0]) != render.applied_hash(copies[1])
