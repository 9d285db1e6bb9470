"""ModelConfigs: how an AIAgent's spec.modelRef becomes the model its runtime uses. Pure: no I/O.

A ModelConfig is namespaced: the platform keeps it, and the Secret with its API key, in a
namespace of its own, under its own RBAC, and says which namespaces may use it
(`spec.allowedNamespaces`). A cluster-scoped kind would need cluster-wide rights to write and an
allow-list all the same; a namespaced one also lets a team keep a ModelConfig of its own.

A tenant never reads the platform's Secret: the operator copies the key into a Secret it owns in
the agent's namespace (`<agent>-model-key`, controlled by the AIAgent, so it goes with it), and
the pod reads the copy. The copy is a child like the others, applied without its value in the
digest (its digest covers the source Secret's name and resourceVersion instead), so no hash of
a key is ever written anywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from agent_runtime.config import BudgetSection

from . import api, render
from .render import Manifest

KEY_COPY_SUFFIX = "-model-key"
KEY_COPY_KEY = "api-key"
# On the copy: where its value comes from (names only, never the value).
SOURCE_ANNOTATION = f"{api.GROUP}/source-secret"
SOURCE_VERSION_ANNOTATION = f"{api.GROUP}/source-version"


class ModelConfigProblem(Exception):
    """The agent's ModelConfig cannot be used; `reason` is the Ready condition's reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def config_key(agent: api.AIAgent) -> tuple[str, str] | None:
    """(namespace, name) of the ModelConfig the agent names, or None (spec.model inline)."""
    ref = agent.spec.model_ref
    return None if ref is None else (ref.namespace or agent.namespace, ref.name)


def check(agent: api.AIAgent, config: api.ModelConfig | None) -> None:
    """Raise ModelConfigProblem when the agent may not use `config` (None: not found)."""
    key = config_key(agent)
    if key is None:
        return
    where = "/".join(key)
    if config is None:
        raise ModelConfigProblem(
            "ModelConfigNotFound", f"ModelConfig {where} (spec.modelRef) not found"
        )
    if not config.allows(agent.namespace):
        raise ModelConfigProblem(
            "ModelConfigNotAllowed",
            f"ModelConfig {where} does not allow namespace {agent.namespace}: its "
            "spec.allowedNamespaces must list it (or '*')",
        )


def key_copy_name(agent: api.AIAgent) -> str:
    return f"{agent.name}{KEY_COPY_SUFFIX}"


def resolved_model(agent: api.AIAgent, config: api.ModelConfig) -> api.ModelSpec:
    """The model the agent runs with: the ModelConfig's, with the agent's overrides, its key
    read from the copy in the agent's namespace."""
    ref = agent.spec.model_ref
    spec = config.spec
    key = (
        api.SecretKeyRef(name=key_copy_name(agent), key=KEY_COPY_KEY)
        if spec.api_key_secret_ref
        else None
    )
    return api.ModelSpec(
        provider=spec.provider,
        name=spec.name,
        base_url=spec.base_url,
        temperature=ref.temperature if ref and ref.temperature is not None else spec.temperature,
        max_tokens=ref.max_tokens if ref and ref.max_tokens is not None else spec.max_tokens,
        timeout_seconds=spec.timeout_seconds,
        api_key_secret_ref=key,
    )


def budget(
    agent: api.AIAgent, config: api.ModelConfig, sharing: Iterable[api.AIAgent]
) -> BudgetSection | None:
    """The namespace budget the agent shares with `sharing` (the agents of its namespace that use
    the same ModelConfig, itself included)."""
    wanted = config.spec.namespace_budget
    if wanted is None or (wanted.requests_per_minute is None and wanted.tokens_per_minute is None):
        return None
    agents = {a.uid: a for a in [*sharing, agent]}  # the agent as given, not as indexed
    pods = sum(render.limit_divisor(a) for a in agents.values())
    return BudgetSection(
        name=f"modelconfig/{config.namespace}/{config.name}/{agent.namespace}",
        requests_per_minute=wanted.requests_per_minute,
        tokens_per_minute=wanted.tokens_per_minute,
        divisor=max(1, pods),
    )


def secrets_read(agent: api.AIAgent, config: api.ModelConfig | None) -> list[tuple[str, str]]:
    """(namespace, name) of each Secret the agent's pods read, sorted: its API key's (for a
    ModelConfig, the platform's Secret the copy is made from), its MCP headers', and its env's."""
    names: set[tuple[str, str]] = set()
    spec = agent.spec
    if spec.model_ref is None and spec.model is not None and spec.model.api_key_secret_ref:
        names.add((agent.namespace, spec.model.api_key_secret_ref.name))
    if spec.model_ref is not None and config is not None and config.spec.api_key_secret_ref:
        names.add((config.namespace, config.spec.api_key_secret_ref.name))
    for server in spec.agent.mcp_servers:
        for header in server.headers:
            if header.value_from is not None:
                names.add((agent.namespace, header.value_from.secret_key_ref.name))
    for var in spec.env:
        if var.value_from is not None and var.value_from.secret_key_ref is not None:
            names.add((agent.namespace, var.value_from.secret_key_ref.name))
    for source in spec.env_from:
        if source.secret_ref is not None:
            names.add((agent.namespace, source.secret_ref.name))
    return sorted(names)


def secrets_version(versions: Iterable[tuple[tuple[str, str], str | None]]) -> str:
    """A short digest of the Secrets' resourceVersions (absent ones count as absent): it changes
    when any of them changes, and only then."""
    text = ";".join(f"{ns}/{name}={version or '-'}" for (ns, name), version in versions)
    return hashlib.sha256(text.encode()).hexdigest()[:16] if text else ""


def effective(
    agent: api.AIAgent,
    config: api.ModelConfig | None,
    secret_versions: dict[tuple[str, str], str | None],
    sharing: Iterable[api.AIAgent] = (),
) -> api.AIAgent:
    """The agent as the operator renders it: spec.modelRef resolved into spec.model, and the
    derived fields filled in (`secret_versions`: of `secrets_read`). Raises ModelConfigProblem
    when the ModelConfig cannot be used."""
    check(agent, config)
    update: dict[str, object] = {
        "secrets_version": secrets_version(sorted(secret_versions.items()))
    }
    if agent.spec.model_ref is not None and config is not None:
        update["spec"] = agent.spec.model_copy(update={"model": resolved_model(agent, config)})
        update["budget"] = budget(agent, config, sharing)
        ref = config.spec.api_key_secret_ref
        if ref is not None:
            update["key_source"] = f"{config.namespace}/{ref.name}/{ref.key}"
            update["key_source_version"] = secret_versions.get((config.namespace, ref.name)) or ""
    return agent.model_copy(update=update)


def key_source(agent: api.AIAgent) -> tuple[str, str, str]:
    """(namespace, name, key) of the platform Secret the agent's key copy is made from."""
    namespace, name, key = agent.key_source.split("/", 2)
    return namespace, name, key


def render_key_copy(agent: api.AIAgent) -> Manifest | None:
    """The copy of the ModelConfig's key in the agent's namespace, without its value (which
    `reconcile` adds as it applies): the manifest, and so its digest, names only where the
    value comes from. None when the agent needs no copy."""
    if not agent.key_source:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": render.child_metadata(
            agent,
            key_copy_name(agent),
            annotations={
                SOURCE_ANNOTATION: agent.key_source,
                SOURCE_VERSION_ANNOTATION: agent.key_source_version,
            },
        ),
        "type": "Opaque",
    }
