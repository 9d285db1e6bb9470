"""Operator settings, read once at startup from `AIAGENT_*` environment variables."""

from __future__ import annotations

import random
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_AGENT_IMAGE = "aiagent-operator/agent-runtime:0.1.0"


class OperatorSettings(BaseSettings):
    """Everything an installation may tune; the Helm chart sets these as env on the operator pod."""

    model_config = SettingsConfigDict(env_prefix="AIAGENT_", frozen=True)

    agent_image: str = Field(
        DEFAULT_AGENT_IMAGE, description="Runtime image for AIAgents that set no spec.image."
    )
    default_cpu_request: str = Field("100m", description="CPU request when the spec gives none.")
    default_memory_request: str = Field("256Mi", description="Memory request when none is given.")
    default_cpu_limit: str = Field("", description="CPU limit when none is given; empty: no limit.")
    default_memory_limit: str = Field("1Gi", description="Memory limit when none is given.")
    watch_namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated namespaces to watch; empty: the whole cluster.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["plain", "json"] = "plain"
    cluster_domain: str = Field("cluster.local", description="Used in status.endpoint.")
    liveness_endpoint: str = Field(
        "http://0.0.0.0:8080/healthz", description="Kopf's liveness probe URL; empty: off."
    )
    metrics_endpoint: str = Field(
        "http://0.0.0.0:9090/metrics",
        description="Where the operator serves its Prometheus metrics (and /readyz on the same "
        "port); empty: off.",
    )
    standalone: bool = Field(False, description="Run without peering (a single replica, tests).")
    peering_name: str = Field("aiagent-operator", description="Kopf peering object name.")
    # Kopf pauses every operator that sees a peer of the same priority, so replicas must differ:
    # a random priority lets exactly one replica (the highest) act, and another take over.
    peering_priority: int = Field(default_factory=lambda: random.randint(1, 1_000_000))
    handler_workers: int = Field(
        16,
        ge=1,
        description="Threads that run reconciles at once (each mostly waits on the API server).",
    )
    network_policy_default: bool = Field(
        False,
        description="Whether an AIAgent that leaves spec.networkPolicy.enabled unset gets a "
        "NetworkPolicy.",
    )
    secret_retry_seconds: int = Field(
        15, ge=1, description="How often an AIAgent whose API key Secret is missing is rechecked."
    )
    component_retry_seconds: int = Field(
        30,
        ge=1,
        description="How often an AIAgent whose Dapr Component is missing, taken by another "
        "AIAgent, or cannot be created (no Dapr in the cluster) is rechecked.",
    )

    @field_validator("watch_namespaces", mode="before")
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        # NoDecode hands over the raw string, so the variable reads "team-a, team-b", not JSON.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
