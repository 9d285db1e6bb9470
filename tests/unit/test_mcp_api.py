"""spec.agent.mcpServers: the schema refuses what cannot work, and a header's Secret reaches the pod
only as an environment variable (the ConfigMap names the variable, never the value)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from agent_runtime.config import AgentConfig
from agent_runtime.mcp_config import McpServer, mcp_header_env
from agent_runtime.settings import RuntimeSettings
from aiagent_operator import api, crd, render
from aiagent_operator.settings import OperatorSettings
from aiagent_operator.status import compute_status

from .conftest import make_agent

GITHUB = {
    "name": "github",
    "url": "https://github-mcp.tools.svc/mcp",
    "tools": ["search_issues", "get_issue"],
    "timeoutSeconds": 20,
    "headers": [
        {"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "gh", "key": "token"}}},
        {"name": "X-Tenant", "value": "team-a"},
    ],
}


# The same server in agent.yaml form (no Secret references there).
PLAIN = {**GITHUB, "headers": []}


def spec_with(*servers: dict[str, Any], **agent: Any) -> dict[str, Any]:
    return {
        "framework": "langchain",
        "model": {"name": "gpt-4o-mini", "apiKeySecretRef": {"name": "openai", "key": "api-key"}},
        "agent": {"mcpServers": list(servers), **agent},
    }


def children(spec: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    configmap, deployment, *_ = render.render_children(make_agent(spec), OperatorSettings())
    env: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return configmap["data"]["agent.yaml"], env


def test_a_secret_header_is_an_env_var_from_the_secret_and_only_named_in_the_configmap() -> None:
    agent_yaml, env = children(spec_with(GITHUB))
    assert {
        "name": "AIAGENT_MCP_GITHUB__AUTHORIZATION",
        "valueFrom": {"secretKeyRef": {"name": "gh", "key": "token"}},
    } in env
    assert (
        "gh" not in agent_yaml.split()
        and "token" not in agent_yaml
        and "secretKeyRef" not in agent_yaml
    )
    server = yaml.safe_load(agent_yaml)["agent"]["mcpServers"][0]
    assert server["headers"] == [
        {"name": "Authorization", "valueFromEnv": "AIAGENT_MCP_GITHUB__AUTHORIZATION"},
        {"name": "X-Tenant", "value": "team-a"},  # not a secret: plain in the config
    ]
    assert (server["url"], server["tools"], server["timeoutSeconds"]) == (
        GITHUB["url"],
        GITHUB["tools"],
        20,
    )
    # The runtime reads the rendered file as it is.
    config = AgentConfig.model_validate(yaml.safe_load(agent_yaml))
    assert config.agent.mcp_servers[0].headers[0].value_from_env == env[1]["name"]


def test_only_secret_headers_get_variables_and_agents_without_servers_are_unchanged() -> None:
    plain = {**GITHUB, "headers": [{"name": "X-Tenant", "value": "team-a"}]}
    _, env = children(spec_with(plain))
    assert not [e for e in env if e["name"].startswith("AIAGENT_MCP_")]
    agent_yaml, _ = children(spec_with())
    assert "mcpServers" not in agent_yaml  # the same agent.yaml (and config hash) as before


def test_variable_names_are_deterministic_and_never_shared() -> None:
    assert mcp_header_env("git-hub", "X-Api-Key") == "AIAGENT_MCP_GIT_HUB__X_API_KEY"
    assert mcp_header_env("a-b", "c") != mcp_header_env("a", "b-c")
    two = [
        {**GITHUB, "name": "a-b", "headers": [GITHUB["headers"][0] | {"name": "C"}]},
        {**GITHUB, "name": "a", "headers": [GITHUB["headers"][0] | {"name": "B-C"}]},
    ]
    _, env = children(spec_with(*two))
    names = [e["name"] for e in env if e["name"].startswith("AIAGENT_MCP_")]
    assert names == ["AIAGENT_MCP_A_B__C", "AIAGENT_MCP_A__B_C"]


@pytest.fixture(scope="module")
def spec_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd.aiagent_schema()["properties"]["spec"]
    return schema


@pytest.mark.parametrize(
    "server",
    [
        {**GITHUB, "name": "GitHub"},  # not lowercase
        {**GITHUB, "name": "git--hub"},  # "--" would make variable names ambiguous
        {**GITHUB, "name": "git_hub"},  # "_" separates server and tool in tool names
        {**GITHUB, "name": "x" * 33},
        {**GITHUB, "url": "ftp://github-mcp/mcp"},
        {**GITHUB, "timeoutSeconds": 0},
        {**GITHUB, "timeoutSeconds": 601},
        {**GITHUB, "tools": [""]},
        {**GITHUB, "headers": [{"name": "Bad Header", "value": "x"}]},
        {**GITHUB, "headers": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gh"}}}]},
        {"url": GITHUB["url"]},  # no name
    ],
)
def test_schema_refuses_bad_servers(server: dict[str, Any], spec_schema: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(spec_with(server), spec_schema)


def test_schema_carries_the_rules_the_api_server_checks(spec_schema: dict[str, Any]) -> None:
    servers = spec_schema["properties"]["agent"]["properties"]["mcpServers"]
    assert servers["x-kubernetes-list-type"] == "map"  # unique names
    assert servers["x-kubernetes-list-map-keys"] == ["name"]
    assert "isURL(self.url)" in json.dumps(servers["items"]["x-kubernetes-validations"])
    headers = servers["items"]["properties"]["headers"]
    assert "lowerAscii" in json.dumps(headers["x-kubernetes-validations"])
    header_rules = {r["message"] for r in headers["items"]["x-kubernetes-validations"]}
    assert header_rules == {
        "the MCP client sets this header itself; it cannot be configured",
        "an MCP header needs exactly one of value or valueFrom",
        "this header carries a credential: take it from a Secret with valueFrom.secretKeyRef, "
        "not a plain value",
    }
    env_rules = json.dumps(spec_schema["properties"]["env"]["items"]["x-kubernetes-validations"])
    assert "startsWith('AIAGENT_MCP_')" in env_rules


@pytest.mark.parametrize(
    ("agent", "message"),
    [
        ({"mcpServers": [PLAIN, PLAIN]}, "names must be unique"),
        (
            {"mcpServers": [{**PLAIN, "headers": [{"name": "Host", "value": "x"}]}]},
            "sets Host itself",
        ),
        (
            {"mcpServers": [{**PLAIN, "headers": [{"name": "X", "value": "1"}] * 2}]},
            "header names must be unique",
        ),
        (
            {"mcpServers": [{**PLAIN, "headers": [{"name": "X"}]}]},
            "exactly one of value or valueFromEnv",
        ),
    ],
)
def test_agent_yaml_refuses_what_the_crd_refuses(agent: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AgentConfig.model_validate(
            {"name": "b", "framework": "langchain", "model": {"name": "m"}, "agent": agent}
        )


def test_the_spec_refuses_duplicate_servers_too() -> None:
    with pytest.raises(ValidationError, match="names must be unique"):
        api.AgentSpec.model_validate({"mcpServers": [GITHUB, GITHUB]})


def test_header_values_from_the_environment_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIAGENT_MCP_GITHUB__AUTHORIZATION", "Bearer ghp_0123456789abcdef")
    server = McpServer.model_validate(
        {
            **GITHUB,
            "headers": [
                {"name": "Authorization", "valueFromEnv": "AIAGENT_MCP_GITHUB__AUTHORIZATION"}
            ],
        }
    )
    config = AgentConfig.model_validate(
        {
            "name": "b",
            "framework": "langchain",
            "model": {"name": "m"},
            "agent": {"mcpServers": [server]},
        }
    )
    secrets = RuntimeSettings().secrets(config)
    assert "Bearer ghp_0123456789abcdef" in secrets and "ghp_0123456789abcdef" in secrets


def test_an_agent_that_cannot_reach_its_mcp_server_shows_why() -> None:
    """The runtime writes its last words to the termination log; the crash-looping pod carries
    them to the AIAgent's Ready condition."""
    said = (
        "cannot build the agent: MCP server 'github' at https://github-mcp.tools.svc/mcp is "
        "unreachable: ConnectError: All connection attempts failed"
    )
    pod = {
        "metadata": {"name": "bot-1"},
        "status": {
            "containerStatuses": [
                {
                    "name": "agent",
                    "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": said}},
                }
            ]
        },
    }
    deployment = {
        "metadata": {"generation": 1, "annotations": {render.GENERATION_ANNOTATION: "3"}},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1},
    }
    status = compute_status(make_agent(spec_with(GITHUB)), deployment, pods=[pod])
    assert status.phase == "Failed"
    assert status.conditions[0].message.endswith(said)
