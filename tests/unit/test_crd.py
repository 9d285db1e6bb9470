"""The CRD is generated from the pydantic models and must stay structural, small and in sync."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from aiagent_operator import api, crd

from .conftest import EXAMPLES, REPO, load_example

CRDS = REPO / "crds"


def walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, schema)]
    for name, prop in (schema.get("properties") or {}).items():
        nodes += walk(prop, f"{path}.{name}")
    if "items" in schema:
        nodes += walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        nodes += walk(schema["additionalProperties"], f"{path}{{}}")
    return nodes


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return crd.aiagent_schema()


def test_committed_crds_match_the_models() -> None:
    for name, content in crd.render_files().items():
        committed = (CRDS / name).read_text()
        assert committed == content, f"crds/{name} is stale: run `make crds`"


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    for path, node in walk(schema):
        assert not {"$ref", "$defs", "allOf", "title"} & node.keys(), path
        if node.get("x-kubernetes-int-or-string"):
            continue
        assert "type" in node, f"{path} has no type"
        if "anyOf" in node:
            pytest.fail(f"{path}: anyOf is only allowed for int-or-string")
        if node["type"] == "object" and path != ".metadata":  # the API server owns metadata
            assert (
                "properties" in node
                or "additionalProperties" in node
                or node.get("x-kubernetes-preserve-unknown-fields")
            ), f"{path}: object with nothing known about it"


def test_every_spec_and_status_field_is_described(schema: dict[str, Any]) -> None:
    for root in ("spec", "status"):
        for path, node in walk(schema["properties"][root], root):
            if path.endswith(("{}", "[]")):
                continue  # map values and list items take their parent's description
            assert node.get("description"), f"{path} needs a description for kubectl explain"


def test_defaults_bounds_and_enums(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    assert spec["framework"]["enum"] == ["crewai", "langchain", "openai-agents"]
    assert spec["replicas"]["default"] == 1 and spec["replicas"]["minimum"] == 0
    scaling = spec["autoscaling"]
    assert scaling["default"] == {
        "enabled": False,
        "minReplicas": 1,
        "maxReplicas": 10,
        "targetCPUUtilizationPercentage": 70,
    }
    target = scaling["properties"]["targetCPUUtilizationPercentage"]
    assert (target["minimum"], target["maximum"], target["default"]) == (1, 100, 70)
    assert scaling["properties"]["minReplicas"]["minimum"] == 1
    assert spec["dapr"]["properties"]["enabled"]["default"] is True
    assert spec["service"]["properties"]["port"]["default"] == 80
    providers = spec["model"]["properties"]["provider"]["enum"]
    assert {"openai", "anthropic", "azure", "ollama", "openai-compatible"} <= set(providers)
    # model or modelRef: exactly one, which a CEL rule says (the e2e validation test shows it).
    assert set(schema["properties"]["spec"]["required"]) == {"framework"}
    # Optional fields carry no null default that would be written into every object.
    assert "default" not in spec["model"]["properties"]["apiKeySecretRef"]
    assert "default" not in spec["image"]


def test_cel_rules(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    rules = {r["rule"]: r["message"] for r in spec["autoscaling"]["x-kubernetes-validations"]}
    assert "self.maxReplicas >= self.minReplicas" in rules
    model_rules = spec["model"]["x-kubernetes-validations"]
    assert any(
        "has(self.baseURL)" in r["rule"] and "openai-compatible" in r["rule"] for r in model_rules
    )
    root_rules = [r["rule"] for r in schema["x-kubernetes-validations"]]
    assert any("self.metadata.name.size() <= 63" in r for r in root_rules)
    for rule in [*model_rules, *schema["x-kubernetes-validations"]]:
        assert rule["message"], "every rule says what to do"


def test_dapr_components_schema(schema: dict[str, Any]) -> None:
    dapr = schema["properties"]["spec"]["properties"]["dapr"]
    for field, prefix in (("stateStore", "state."), ("pubsub", "pubsub.")):
        ref = dapr["properties"][field]
        assert ref["type"] == "object" and ref["required"] == ["name"]
        assert "default" not in ref["properties"]["version"]  # v1 only with type, set at render
        rules = {r["rule"]: r["message"] for r in ref["x-kubernetes-validations"]}
        assert rules[f"!has(self.type) || self.type.startsWith('{prefix}')"] == (
            f"spec.dapr.{field}.type must start with '{prefix}' (a Dapr "
            f"{'state store' if field == 'stateStore' else 'pub/sub'} component type, e.g. "
            f"{prefix}redis)"
        )
        assert (
            f"spec.dapr.{field}.version needs spec.dapr.{field}.type"
            in rules["has(self.type) || !has(self.version)"]
        )
        assert (
            f"spec.dapr.{field}.metadata needs spec.dapr.{field}.type"
            in rules["has(self.type) || !has(self.metadata) || size(self.metadata) == 0"]
        )
        metadata = ref["properties"]["metadata"]
        # One entry per name (server-side apply merges by it), each a value or a Secret key.
        assert metadata["x-kubernetes-list-type"] == "map"
        assert metadata["x-kubernetes-list-map-keys"] == ["name"]
        (entry_rule,) = metadata["items"]["x-kubernetes-validations"]
        assert entry_rule == {
            "rule": "has(self.value) != has(self.secretKeyRef)",
            "message": "metadata entries need exactly one of value or secretKeyRef",
        }
        assert metadata["items"]["properties"]["secretKeyRef"]["required"] == ["name", "key"]
    rules = {r["rule"]: r["message"] for r in dapr["x-kubernetes-validations"]}
    assert rules["!has(self.subscribe) || has(self.pubsub)"].startswith(
        "spec.dapr.subscribe needs spec.dapr.pubsub"
    )
    assert dapr["properties"]["subscribe"]["required"] == ["topic"]


@pytest.mark.parametrize(
    "dapr",
    [
        {"stateStore": "statestore"},  # the old string form
        {"stateStore": {"type": "state.redis"}},  # no name
        {"stateStore": {"name": "Not_A_Name"}},
        {"pubsub": {"name": "bus", "type": "redis"}},  # not a component type
        {"stateStore": {"name": "m", "type": "state.redis", "version": "1"}},
        {"stateStore": {"name": "m", "type": "state.redis", "metadata": [{"value": "x"}]}},
        {"subscribe": {"replyTopic": "answers"}},  # no topic
    ],
)
def test_schema_refuses_bad_dapr_specs(dapr: dict[str, Any], schema: dict[str, Any]) -> None:
    spec = {"framework": "langchain", "model": {"name": "m"}, "dapr": dapr}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(spec, schema["properties"]["spec"])


def test_crd_metadata() -> None:
    doc = crd.aiagent_crd()
    names = doc["spec"]["names"]
    assert doc["metadata"]["name"] == "aiagents.aiagents.dev"
    assert names["shortNames"] == ["aia"] and names["categories"] == ["ai", "agents"]
    version = doc["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "status" in version["subresources"]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:6] == ["Framework", "Model", "ModelConfig", "Replicas", "Ready", "Phase"]
    assert columns[-1] == "Age"


def test_crd_is_small_enough_for_client_side_apply() -> None:
    # kubectl's last-applied annotation (and Argo CD) cap an object at 256 KiB of compact JSON:
    # half of it is the margin (typed affinity and selectors took the YAML file past 128 KiB).
    for name in (crd.AIAGENT_CRD_FILE, crd.MODEL_CONFIG_CRD_FILE):
        doc = yaml.safe_load((CRDS / name).read_text())
        assert len(json.dumps(doc, separators=(",", ":"))) < 128 * 1024


def test_peering_crds_are_kopfs_kinds() -> None:
    docs = list(yaml.safe_load_all((CRDS / crd.PEERING_CRD_FILE).read_text()))
    assert {d["spec"]["names"]["kind"] for d in docs} == {"ClusterKopfPeering", "KopfPeering"}
    assert all(d["spec"]["group"] == "kopf.dev" for d in docs)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid_against_the_crd(example: Path, schema: dict[str, Any]) -> None:
    doc = load_example(example)
    assert doc["apiVersion"] == api.API_VERSION and doc["kind"] == api.KIND
    jsonschema.validate(doc["spec"], schema["properties"]["spec"])
    api.AIAgentSpec.model_validate(doc["spec"])


@pytest.mark.parametrize(
    "spec",
    [
        {"framework": "autogen", "model": {"name": "m"}},
        {"framework": "langchain", "modelRef": {"name": "Not_A_Name"}},
        {"framework": "langchain", "model": {"name": "m"}, "replicas": -1},
        {
            "framework": "langchain",
            "model": {"name": "m"},
            "autoscaling": {"targetCPUUtilizationPercentage": 0},
        },
        {
            "framework": "langchain",
            "model": {"name": "m"},
            "autoscaling": {"targetCPUUtilizationPercentage": 101},
        },
        {"framework": "langchain", "model": {"name": "m", "baseURL": "ftp://x"}},
    ],
)
def test_schema_refuses_bad_specs(spec: dict[str, Any], schema: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(spec, schema["properties"]["spec"])


def test_readme_field_reference_is_current() -> None:
    from aiagent_operator.reference import END, START, field_reference

    readme = (REPO / "README.md").read_text()
    generated = readme.split(START, 1)[1].split(END, 1)[0]
    assert generated == f"\n{field_reference()}", "README field reference is stale: run `make crds`"
    for field in ("spec.model.apiKeySecretRef", "spec.autoscaling.targetCPUUtilizationPercentage"):
        assert f"`{field}`" in generated


# -- holes the hostile specs found (tests/e2e/test_hostile_specs.py); the CEL halves of these
# rules run in tests/e2e/test_validation.py against a real API server -----------------------------

GOOD = {"framework": "langchain", "model": {"name": "m"}}


@pytest.mark.parametrize(
    "changes",
    [
        {"resources": {"requests": {"memory": "1.5.5"}}},  # the API server answered 500
        {"resources": {"limits": {"cpu": "-100m"}}},
        {"resources": {"requests": {"cpu": "\u0099"}}},
        {"dapr": {"sidecar": {"limits": {"memory": "lots"}}}},
        {"podLabels": {"team": "has space"}},
        {"nodeSelector": {"disk": "v" * 64}},
        {"tolerations": [{"key": "k", "operator": "Equal", "value": "a/b"}]},
        {"image": " nginx"},
        # Free-form before: {affinity: {fieldRef: {}}} was a 500 from the API server, forever.
        {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}},
        {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.nope"}}}]},
        {"envFrom": [{"prefix": "1bad", "secretRef": {"name": "s"}}]},
        {
            "networkPolicy": {
                "allowedPodSelector": {"matchExpressions": [{"key": "a b", "operator": "Exists"}]}
            }
        },
    ],
    ids=lambda c: next(iter(c)),
)
def test_schema_refuses_what_the_api_server_would_refuse_in_a_child(
    changes: dict[str, Any], schema: dict[str, Any]
) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**GOOD, **changes}, schema["properties"]["spec"])


def rules_of(node: dict[str, Any]) -> str:
    return " ".join(r["rule"] for r in node.get("x-kubernetes-validations", []))


def test_cel_rules_guard_what_flows_into_children(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    for field in ("podLabels", "podAnnotations", "nodeSelector"):
        assert "k.matches(" in rules_of(spec[field]), field  # keys: label keys
    assert "bytes(self[k])" in rules_of(spec["podAnnotations"])  # the 256 KiB of a pod's
    toleration = rules_of(spec["tolerations"]["items"])
    assert "NoExecute" in toleration and "'Exists'" in toleration
    resources = spec["resources"]
    assert "compareTo" in rules_of(resources)  # request <= limit
    assert (
        "nvidia.com/gpu"
        in resources["properties"]["requests"]["x-kubernetes-validations"][0]["message"]
    )
    env = spec["env"]
    assert env["x-kubernetes-list-type"] == "map"  # a name twice: the Deployment's SSA 500
    assert "self.value == ''" in rules_of(env["items"])
    assert "filter(x, x).size() == 1" in rules_of(env["items"]["properties"]["valueFrom"])
    assert spec["imagePullSecrets"]["x-kubernetes-list-type"] == "map"
    egress = spec["networkPolicy"]["properties"]["extraEgress"]["items"]["properties"]
    peer = egress["to"]["items"]["properties"]["ipBlock"]
    assert "isCIDR(self)" in rules_of(peer["properties"]["cidr"])
    assert "containsCIDR" in rules_of(peer)
    assert "65535" in rules_of(egress["ports"]["items"])
    assert "isURL(self.baseURL)" in rules_of(spec["model"])
    assert "model.baseURL is required" in " ".join(
        r["message"] for r in spec["model"]["x-kubernetes-validations"]
    )


def test_a_long_refusal_fits_in_a_condition() -> None:
    # An API server's refusal listing many fields would fail the status write (and the handler).
    condition = api.Condition(
        type="Ready", status="False", reason="ChildRefused", message="x" * 10**5
    )
    assert len(condition.message) == api.MAX_CONDITION_MESSAGE
