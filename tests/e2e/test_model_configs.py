"""A platform's ModelConfig used by tenants' AIAgents, Secret rotation, budgets and the
NetworkPolicy child, on a real API server (kwok's pods)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from aiagent_operator import model_configs, render
from localcluster.kubectl import KWOK_TOLERATION, Kubectl, condition, wait_for

from .conftest import create_namespace
from .test_lifecycle import ready_agent

pytestmark = pytest.mark.usefixtures("operator")

KEY = "sk-platform-only"  # the platform's key: no tenant may see it anywhere but its copy


@pytest.fixture
def platform(kubectl: Kubectl) -> Iterator[str]:
    """The platform team's namespace (watched by the session operator, like every `e2e-*`)."""
    name = create_namespace(kubectl, "e2e-platform")
    kubectl.apply_secret("llm", "token", KEY, namespace=name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def other_namespace(kubectl: Kubectl) -> Iterator[str]:
    name = create_namespace(kubectl, "e2e")
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def model_config(platform: str, allowed: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aiagents.dev/v1alpha1",
        "kind": "ModelConfig",
        "metadata": {"name": "gpt", "namespace": platform},
        "spec": {
            "provider": "openai-compatible",
            "name": "gpt-4o-mini",
            "baseURL": f"http://models.{platform}.svc:8000/v1",
            "apiKeySecretRef": {"name": "llm", "key": "token"},
            "allowedNamespaces": allowed,
            **spec,
        },
    }


def agent(name: str, platform: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aiagents.dev/v1alpha1",
        "kind": "AIAgent",
        "metadata": {"name": name},
        "spec": {
            "framework": "langchain",
            "modelRef": {"name": "gpt", "namespace": platform},
            "agent": {"instructions": "Be brief."},
            "replicas": 1,
            "dapr": {"enabled": False},
            "tolerations": [KWOK_TOLERATION],
            **spec,
        },
    }


def agent_yaml(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    configmap = kubectl.get("configmap", f"{name}-agent", namespace)
    assert configmap is not None
    doc: dict[str, Any] = yaml.safe_load(configmap["data"]["agent.yaml"])
    return doc


def template_annotations(kubectl: Kubectl, namespace: str, name: str) -> dict[str, str]:
    deployment = kubectl.get("deployment", name, namespace)
    assert deployment is not None
    annotations: dict[str, str] = deployment["spec"]["template"]["metadata"]["annotations"]
    return annotations


def pending(kubectl: Kubectl, namespace: str, name: str, reason: str) -> dict[str, Any]:
    return wait_for(
        f"AIAgent {name} Pending with {reason}",
        lambda: (
            (a := kubectl.get("aiagent", name, namespace))
            and condition(a, "Ready").get("reason") == reason
            and a["status"].get("phase") == "Pending"
            and a
        ),
        timeout=60,
    )


def events_of(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    items = kubectl.list("events", namespace)
    return [e for e in items if e["involvedObject"].get("name") == name]


def test_a_tenant_uses_the_platforms_model_config_through_a_copy_of_its_key(
    kubectl: Kubectl, platform: str, namespace: str, other_namespace: str
) -> None:
    kubectl.apply(model_config(platform, [namespace]))
    ready_agent(kubectl, namespace, agent("bot", platform))

    model = agent_yaml(kubectl, namespace, "bot")["model"]
    assert (model["provider"], model["name"]) == ("openai-compatible", "gpt-4o-mini")
    assert model["baseURL"] == f"http://models.{platform}.svc:8000/v1"
    # The pod reads the key from the operator's copy in the tenant's namespace, and only there.
    deployment = kubectl.get("deployment", "bot", namespace)
    assert deployment is not None
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODEL_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "bot-model-key",
        "key": "api-key",
    }
    copy = kubectl.get("secret", "bot-model-key", namespace)
    assert copy is not None
    assert base64.b64decode(copy["data"]["api-key"]).decode() == KEY
    assert copy["metadata"]["ownerReferences"][0]["name"] == "bot"
    assert KEY not in json.dumps(kubectl.get("aiagent", "bot", namespace))
    assert KEY not in json.dumps(kubectl.get("configmap", "bot-agent", namespace))

    # A namespace the ModelConfig does not allow gets nothing: no pods, no key, a reason.
    kubectl.apply(agent("intruder", platform), namespace=other_namespace)
    blocked = pending(kubectl, other_namespace, "intruder", "ModelConfigNotAllowed")
    message = condition(blocked, "Ready")["message"]
    assert f"ModelConfig {platform}/gpt does not allow namespace {other_namespace}" in message
    assert kubectl.get("secret", "intruder-model-key", other_namespace) is None
    assert kubectl.get("deployment", "intruder", other_namespace) is None
    wait_for(
        "a Warning event naming the ModelConfig",
        lambda: any(
            e["type"] == "Warning" and e["reason"] == "ModelConfigNotAllowed"
            for e in events_of(kubectl, other_namespace, "intruder")
        ),
    )

    # Allowing the namespace is enough: the waiting agent goes ahead without being touched.
    kubectl.apply(model_config(platform, [namespace, other_namespace]))
    wait_for(
        "the allowed agent's Deployment",
        lambda: kubectl.get("deployment", "intruder", other_namespace),
        timeout=60,
    )
    wait_for("its key copy", lambda: kubectl.get("secret", "intruder-model-key", other_namespace))

    # Allowed no more: the key is taken away, copy and pods, and the agent says why.
    kubectl.apply(model_config(platform, [namespace]))
    pending(kubectl, other_namespace, "intruder", "ModelConfigNotAllowed")
    wait_for(
        "the key copy and the Deployment deleted",
        lambda: (
            kubectl.get("secret", "intruder-model-key", other_namespace) is None
            and kubectl.get("deployment", "intruder", other_namespace) is None
        ),
        timeout=60,
    )
    assert kubectl.get("deployment", "bot", namespace) is not None  # the allowed one stays


def test_a_secret_of_the_copys_name_is_never_taken_over(
    kubectl: Kubectl, platform: str, namespace: str
) -> None:
    kubectl.apply(model_config(platform, [namespace]))
    kubectl.apply_secret("bot-model-key", "mine", "a team's own value", namespace=namespace)
    kubectl.apply(agent("bot", platform), namespace=namespace)
    refused = wait_for(
        "the agent to say its key copy's name is taken",
        lambda: (
            (a := kubectl.get("aiagent", "bot", namespace))
            and condition(a, "Ready").get("reason") == "KeyCopyConflict"
            and a
        ),
        timeout=60,
    )
    assert "rename or delete that Secret" in condition(refused, "Ready")["message"]
    theirs = kubectl.get("secret", "bot-model-key", namespace)
    assert theirs is not None and set(theirs["data"]) == {"mine"}
    assert not theirs["metadata"].get("ownerReferences")
    # Their Secret gone, the agent goes ahead by itself (rechecked like a missing Secret).
    kubectl.run("delete", "secret", "bot-model-key", namespace=namespace)
    ready_agent(kubectl, namespace, agent("bot", platform))
    copy = kubectl.get("secret", "bot-model-key", namespace)
    assert copy is not None and set(copy["data"]) == {"api-key"}


def test_a_model_config_change_rolls_its_agents_and_its_deletion_is_reported(
    kubectl: Kubectl, platform: str, namespace: str
) -> None:
    kubectl.apply(model_config(platform, [namespace]))
    ready_agent(kubectl, namespace, agent("bot", platform))
    before = template_annotations(kubectl, namespace, "bot")[render.CONFIG_HASH_ANNOTATION]

    kubectl.apply(model_config(platform, [namespace], name="gpt-4o"))
    wait_for(
        "agent.yaml to follow the ModelConfig",
        lambda: agent_yaml(kubectl, namespace, "bot")["model"]["name"] == "gpt-4o",
        timeout=60,
    )
    after = template_annotations(kubectl, namespace, "bot")[render.CONFIG_HASH_ANNOTATION]
    assert after != before  # the pods roll onto the new model
    generation = kubectl.get("aiagent", "bot", namespace)
    assert generation is not None and generation["metadata"]["generation"] == 1

    kubectl.run("delete", "modelconfig", "gpt", namespace=platform)
    gone = pending(kubectl, namespace, "bot", "ModelConfigNotFound")
    assert (
        condition(gone, "Ready")["message"]
        == f"ModelConfig {platform}/gpt (spec.modelRef) not found"
    )
    assert kubectl.get("deployment", "bot", namespace) is not None  # the pods keep serving

    kubectl.apply(model_config(platform, [namespace]))
    ready = wait_for(
        "the agent Ready again",
        lambda: (
            (a := kubectl.get("aiagent", "bot", namespace)) and a["status"].get("phase") == "Ready"
        ),
        timeout=60,
    )
    assert ready
    wait_for(
        "a Normal event for the recovery",
        lambda: any(
            e["type"] == "Normal" and e["reason"] == "Ready"
            for e in events_of(kubectl, namespace, "bot")
        ),
    )


def test_a_rotated_key_rolls_the_pods_without_touching_the_agent(
    kubectl: Kubectl, platform: str, namespace: str
) -> None:
    kubectl.apply(model_config(platform, [namespace]))
    kubectl.apply_secret("own", "api-key", "sk-one", namespace=namespace)
    own = {
        "apiVersion": "aiagents.dev/v1alpha1",
        "kind": "AIAgent",
        "metadata": {"name": "own"},
        "spec": {
            "framework": "langchain",
            "model": {"name": "m", "apiKeySecretRef": {"name": "own", "key": "api-key"}},
            "dapr": {"enabled": False},
            "tolerations": [KWOK_TOLERATION],
        },
    }
    ready_agent(kubectl, namespace, own)
    ready_agent(kubectl, namespace, agent("bot", platform))
    annotation = render.SECRETS_VERSION_ANNOTATION
    own_before = template_annotations(kubectl, namespace, "own")[annotation]
    bot_before = template_annotations(kubectl, namespace, "bot")[annotation]

    kubectl.apply_secret("own", "api-key", "sk-two", namespace=namespace)
    kubectl.apply_secret("llm", "token", "sk-platform-rotated", namespace=platform)
    for name, before in (("own", own_before), ("bot", bot_before)):
        wait_for(
            f"{name}'s pod template to follow its Secret",
            lambda name=name, before=before: (  # type: ignore[misc]
                template_annotations(kubectl, namespace, name)[annotation] != before
            ),
            timeout=60,
        )
    copy = kubectl.get("secret", "bot-model-key", namespace)
    assert copy is not None
    assert base64.b64decode(copy["data"]["api-key"]).decode() == "sk-platform-rotated"
    for name in ("own", "bot"):
        current = kubectl.get("aiagent", name, namespace)
        assert current is not None and current["metadata"]["generation"] == 1
        ready_agent(kubectl, namespace, own if name == "own" else agent("bot", platform))

    # The copy is the operator's: edited by hand, it is restored from the source.
    copy["data"]["api-key"] = base64.b64encode(b"tampered").decode()
    kubectl.apply(copy)
    wait_for(
        "the copy restored",
        lambda: (
            base64.b64decode(
                (kubectl.get("secret", "bot-model-key", namespace) or {})["data"]["api-key"]
            ).decode()
            == "sk-platform-rotated"
        ),
        timeout=60,
    )


def test_a_namespace_budget_is_split_among_the_pods_of_its_agents(
    kubectl: Kubectl, platform: str, namespace: str
) -> None:
    kubectl.apply(model_config(platform, [namespace], namespaceBudget={"tokensPerMinute": 6000}))
    ready_agent(kubectl, namespace, agent("one", platform, replicas=2))
    assert agent_yaml(kubectl, namespace, "one")["limits"]["budget"]["divisor"] == 2
    ready_agent(kubectl, namespace, agent("two", platform))
    wait_for(
        "the first agent's share to shrink",
        lambda: agent_yaml(kubectl, namespace, "one")["limits"]["budget"]["divisor"] == 3,
        timeout=60,
    )
    budget = agent_yaml(kubectl, namespace, "two")["limits"]["budget"]
    assert budget == {
        "name": f"modelconfig/{platform}/gpt/{namespace}",
        "tokensPerMinute": 6000,
        "divisor": 3,
    }
    kubectl.run("delete", "aiagent", "two", namespace=namespace)
    wait_for(
        "the first agent's share to grow back",
        lambda: agent_yaml(kubectl, namespace, "one")["limits"]["budget"]["divisor"] == 2,
        timeout=60,
    )


def test_switching_to_an_inline_model_removes_the_key_copy(
    kubectl: Kubectl, platform: str, namespace: str
) -> None:
    kubectl.apply(model_config(platform, [namespace]))
    ready_agent(kubectl, namespace, agent("bot", platform))
    assert kubectl.get("secret", "bot-model-key", namespace) is not None
    inline = agent("bot", platform)
    del inline["spec"]["modelRef"]
    inline["spec"]["model"] = {"name": "m"}
    kubectl.run(
        "patch",
        "aiagent",
        "bot",
        "--type=json",
        '-p=[{"op":"remove","path":"/spec/modelRef"},'
        '{"op":"add","path":"/spec/model","value":{"name":"m"}}]',
        namespace=namespace,
    )
    wait_for(
        "the copy deleted",
        lambda: kubectl.get("secret", "bot-model-key", namespace) is None,
        timeout=60,
    )
    assert model_configs.KEY_COPY_SUFFIX == "-model-key"


def test_a_network_policy_comes_and_goes_with_the_spec(kubectl: Kubectl, namespace: str) -> None:
    manifest = {
        "apiVersion": "aiagents.dev/v1alpha1",
        "kind": "AIAgent",
        "metadata": {"name": "fenced"},
        "spec": {
            "framework": "langchain",
            "model": {
                "name": "m",
                "provider": "openai-compatible",
                "baseURL": "http://10.1.2.3:8000/v1",
            },
            "dapr": {"enabled": False},
            "tolerations": [KWOK_TOLERATION],
            "networkPolicy": {"enabled": True, "allowedNamespaces": ["monitoring"]},
        },
    }
    ready_agent(kubectl, namespace, manifest)
    policy = kubectl.get("networkpolicy", "fenced", namespace)
    assert policy is not None
    assert policy["spec"]["podSelector"] == {"matchLabels": {render.AGENT_LABEL: "fenced"}}
    egress = json.dumps(policy["spec"]["egress"])
    assert "10.1.2.3/32" in egress and "8000" in egress  # the model endpoint, and only it

    manifest["spec"]["networkPolicy"]["enabled"] = False
    kubectl.apply(manifest, namespace=namespace)
    wait_for(
        "the NetworkPolicy deleted",
        lambda: kubectl.get("networkpolicy", "fenced", namespace) is None,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"framework": "langchain", "model": None}, "set exactly one of spec.model"),
        (
            {"framework": "langchain", "model": {"name": "m"}, "modelRef": {"name": "gpt"}},
            "set exactly one of spec.model",
        ),
    ],
)
def test_exactly_one_model_source_is_required(
    kubectl: Kubectl, namespace: str, spec: dict[str, Any], message: str
) -> None:
    manifest = {
        "apiVersion": "aiagents.dev/v1alpha1",
        "kind": "AIAgent",
        "metadata": {"name": "bad"},
        "spec": spec,
    }
    result = kubectl.run(
        "apply", "-f", "-", input=yaml.safe_dump(manifest), namespace=namespace, check=False
    )
    assert result.returncode != 0 and message in result.stderr
