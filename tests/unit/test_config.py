"""agent.yaml: the format the runtime reads and the operator renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_runtime.cli import main as aiagent
from agent_runtime.config import (
    AgentConfig,
    ConfigError,
    agent_config_from_manifest,
    load_agent_config,
)

from .conftest import EXAMPLES, load_example

MINIMAL = "name: bot\nframework: langchain\nmodel: {name: gpt-4o-mini}\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, MINIMAL))
    assert config.model.provider == "openai"
    assert config.model.timeout_seconds == 60
    assert config.agent.tools == []
    assert config.dapr.enabled is False


def test_config_round_trips_through_yaml(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, MINIMAL + "agent: {tools: [calculator]}\n"))
    again = load_agent_config(write(tmp_path, config.to_yaml()))
    assert again == config


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("name: bot\nframework: autogen\nmodel: {name: m}\n", "framework"),
        ("name: bot\nframework: langchain\n", "model"),
        (
            "name: bot\nframework: langchain\nmodel: {name: m, temperature: 3}\n",
            "model.temperature",
        ),
        (
            "name: bot\nframework: langchain\nmodel: {name: m, provider: openai-compatible}\n",
            "baseURL",
        ),
        (MINIMAL + "agent: {tools: [shell]}\n", "agent.tools.0"),
        (MINIMAL + "modle: typo\n", "modle"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_agent_config(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    assert field in message
    assert "\n" not in message


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_agent_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_agent_config(write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_agent_config(write(tmp_path, "- a list\n"))


def test_manifest_drops_operator_only_fields() -> None:
    manifest = {
        "kind": "AIAgent",
        "metadata": {"name": "bot"},
        "spec": {
            "framework": "crewai",
            "model": {"name": "gpt-4o-mini", "apiKeySecretRef": {"name": "s", "key": "k"}},
            "agent": {"role": "r", "configMapRef": {"name": "c", "key": "crew.yaml"}},
            "replicas": 3,
            "dapr": {"stateStore": "statestore", "logLevel": "debug"},
        },
    }
    config = agent_config_from_manifest(manifest, framework_config_path="/etc/aiagent/framework/x")
    wire = config.to_wire()
    assert "apiKeySecretRef" not in wire["model"]
    assert "configMapRef" not in wire["agent"]
    assert wire["agent"]["frameworkConfigPath"] == "/etc/aiagent/framework/x"
    assert wire["dapr"] == {"enabled": True, "stateStore": "statestore"}
    assert config.name == "bot"


def test_manifest_error_points_into_spec(tmp_path: Path) -> None:
    path = write(tmp_path, "kind: AIAgent\nmetadata: {name: x}\nspec: {framework: langchain}\n")
    with pytest.raises(ConfigError, match=r"spec\.model"):
        load_agent_config(path)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_a_runnable_config(example: Path) -> None:
    config = load_agent_config(example)
    assert isinstance(config, AgentConfig)
    assert config.name == load_example(example)["metadata"]["name"]


def test_cli_check_prints_config_or_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert aiagent(["check", str(EXAMPLES[0])]) == 0
    assert "framework:" in capsys.readouterr().out
    bad = write(tmp_path, "name: bot\nframework: langchain\nmodel: {name: ''}\n")
    assert aiagent(["check", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aiagent: ") and "model.name" in err and "\n" not in err


def test_a_manifest_with_a_model_ref_says_it_needs_the_cluster() -> None:
    manifest = {
        "metadata": {"name": "a"},
        "spec": {"framework": "langchain", "modelRef": {"name": "gpt"}},
    }
    with pytest.raises(ConfigError, match="spec.modelRef names a ModelConfig.*give spec.model"):
        agent_config_from_manifest(manifest)


def test_a_manifests_limits_hold_when_run_locally() -> None:
    spec = {"framework": "langchain", "model": {"name": "m"}, "limits": {"requestsPerMinute": 5}}
    config = agent_config_from_manifest({"metadata": {"name": "a"}, "spec": spec})
    assert config.limits.requests_per_minute == 5 and config.limits.divisor == 1
