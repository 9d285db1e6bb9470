"""Errors the HTTP layer maps to status codes, and scrubbing of secrets from messages."""

from __future__ import annotations

import re


class RuntimeFailure(Exception):
    """Base: carries the HTTP status and a message that is safe to show a client."""

    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProviderError(RuntimeFailure):
    """The model provider answered with an error (or could not be reached)."""

    status_code = 502
    error_type = "provider_error"


class ProviderTimeout(RuntimeFailure):
    """The model provider did not answer within model.timeoutSeconds."""

    status_code = 504
    error_type = "provider_timeout"


class NotReady(RuntimeFailure):
    status_code = 503
    error_type = "not_ready"


# Shapes of common API keys, scrubbed even when we do not know the exact value.
_KEY_SHAPES = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{6,}|sk-ant-[A-Za-z0-9_\-]{6,}|Bearer\s+\S+)")


class Redactor:
    """Removes known secret values (and anything shaped like an API key) from text."""

    def __init__(self, secrets: list[str | None]) -> None:
        # Longest first, so a secret containing another is removed whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return _KEY_SHAPES.sub("[redacted]", text)
