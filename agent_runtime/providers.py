"""Chat models for each provider, as each framework wants them. Imported only by the adapters."""

from __future__ import annotations

import os
from typing import Any

import httpx

from .config import AgentConfig, ModelConfig
from .errors import ProviderError, ProviderTimeout, RuntimeFailure

# The OpenAI SDK refuses to start without a key; servers that need none ignore it.
NO_KEY = "not-needed"
OLLAMA_DEFAULT_URL = "http://localhost:11434"
AZURE_API_VERSION = os.environ.get("OPENAI_API_VERSION", "2024-10-21")
# Retries of one model call, made by the provider's SDK (the openai and anthropic clients, under
# every framework): a 408, 409, 429 or 5xx answer, a refused or dropped connection, a timeout;
# with exponential back-off from 0.5 s (to 8 s, jittered), and a 429's or 503's Retry-After
# honoured when it is at most 60 s. One model call has no side effects, so it is safe to repeat;
# a stream that broke after it began is not repeated (the client has part of it). Every try
# counts against model.timeoutSeconds, which bounds the whole request (504 when it runs out).
MAX_RETRIES = 2


def system_prompt(config: AgentConfig) -> str:
    """For LangChain: role, instructions and goal folded into one system prompt."""
    agent = config.agent
    parts = []
    if agent.role:
        parts.append(f"You are {agent.role}.")
    if agent.instructions:
        parts.append(agent.instructions)
    if agent.goal:
        parts.append(f"Your goal: {agent.goal}")
    return "\n\n".join(parts) or "You are a helpful assistant."


def langchain_chat_model(model: ModelConfig, api_key: str | None) -> Any:
    common: dict[str, Any] = {"timeout": model.timeout_seconds, "max_retries": MAX_RETRIES}
    if model.temperature is not None:
        common["temperature"] = model.temperature
    if model.max_tokens is not None:
        common["max_tokens"] = model.max_tokens
    if model.provider == "anthropic":
        from langchain_anthropic import ChatAnthropic

        extra = {"base_url": model.base_url} if model.base_url else {}
        return ChatAnthropic(model_name=model.name, api_key=api_key or NO_KEY, **extra, **common)
    if model.provider == "azure":
        from langchain_openai import AzureChatOpenAI

        return AzureChatOpenAI(
            azure_endpoint=model.base_url,
            azure_deployment=model.name,
            api_version=AZURE_API_VERSION,
            api_key=api_key or NO_KEY,
            **common,
        )
    from langchain_openai import ChatOpenAI

    base_url = model.base_url
    if model.provider == "ollama":  # Ollama speaks the OpenAI API under /v1
        base_url = (base_url or OLLAMA_DEFAULT_URL).rstrip("/") + "/v1"
    return ChatOpenAI(
        model=model.name,
        base_url=base_url,
        api_key=api_key or NO_KEY,
        stream_usage=True,
        **common,
    )


def crewai_llm(model: ModelConfig, api_key: str | None) -> Any:
    from crewai import LLM

    options: dict[str, Any] = {
        "timeout": model.timeout_seconds,
        "api_key": api_key or NO_KEY,
        "max_retries": MAX_RETRIES,
    }
    if model.temperature is not None:
        options["temperature"] = model.temperature
    if model.max_tokens is not None:
        options["max_tokens"] = model.max_tokens
    if model.provider == "anthropic":
        return LLM(model=f"anthropic/{model.name}", base_url=model.base_url, **options)
    if model.provider == "azure":
        return LLM(
            model=f"azure/{model.name}",
            base_url=model.base_url,
            api_version=AZURE_API_VERSION,
            **options,
        )
    if model.provider == "openai" and not model.base_url:
        return LLM(model=f"openai/{model.name}", **options)
    base_url = model.base_url
    if model.provider == "ollama":
        base_url = (base_url or OLLAMA_DEFAULT_URL).rstrip("/") + "/v1"
    # Any other OpenAI-speaking server: the native OpenAI client with a custom endpoint.
    return LLM(model=model.name, base_url=base_url, custom_openai=True, **options)


ANTHROPIC_DEFAULT_URL = "https://api.anthropic.com"


def openai_client(model: ModelConfig, api_key: str | None) -> Any:
    """An `AsyncOpenAI` client for the OpenAI Agents SDK, which speaks chat completions to it.

    Every provider is reached through its OpenAI-compatible endpoint: Ollama's and Anthropic's
    under `<baseURL>/v1` (Anthropic's "OpenAI SDK compatibility"), Azure through AsyncAzureOpenAI.
    """
    import openai

    common: dict[str, Any] = {
        "api_key": api_key or NO_KEY,
        "timeout": float(model.timeout_seconds),
        "max_retries": MAX_RETRIES,
    }
    if model.provider == "azure":
        return openai.AsyncAzureOpenAI(
            azure_endpoint=str(model.base_url),
            azure_deployment=model.name,
            api_version=AZURE_API_VERSION,
            **common,
        )
    base_url = model.base_url
    if model.provider in ("ollama", "anthropic"):
        default = OLLAMA_DEFAULT_URL if model.provider == "ollama" else ANTHROPIC_DEFAULT_URL
        base_url = (base_url or default).rstrip("/")
        if not base_url.endswith("/v1"):
            base_url += "/v1"
    return openai.AsyncOpenAI(base_url=base_url, **common)


def provider_failure(exc: BaseException) -> RuntimeFailure | None:
    """Translate an SDK exception (OpenAI, Anthropic, httpx) into our 502/504, else None."""
    name = type(exc).__name__
    if "Timeout" in name:
        return ProviderTimeout(f"the model provider timed out: {exc}")
    if isinstance(exc, httpx.TransportError):  # e.g. a stream cut half way (RemoteProtocolError)
        return ProviderError(f"the connection to the model provider broke: {exc}")
    status = getattr(exc, "status_code", None)
    if status is not None or name in ("APIConnectionError", "APIError", "ConnectError"):
        detail = getattr(exc, "message", None) or str(exc)
        prefix = f"the model provider answered {status}" if status else "the model provider failed"
        return ProviderError(f"{prefix}: {detail}")
    cause = exc.__cause__ or exc.__context__
    return provider_failure(cause) if cause is not None and cause is not exc else None
