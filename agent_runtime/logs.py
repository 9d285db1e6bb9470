"""Structured (JSON) logs with the request id, and secrets scrubbed from every line."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

from .errors import Redactor

request_id: ContextVar[str] = ContextVar("request_id", default="")


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if request_id.get():
            entry["request_id"] = request_id.get()
        for key in ("method", "path", "status", "duration_ms", "route"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self._redact(json.dumps(entry, ensure_ascii=False))


class PlainFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = request_id.get()
        return self._redact(f"{line} request_id={rid}" if rid else line)


def configure_logging(log_format: str, redact: Redactor, level: int = logging.INFO) -> None:
    """Route every logger (ours, uvicorn's, the frameworks') through one scrubbing formatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if log_format == "json" else PlainFormatter(redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # We log each request ourselves, with its id and duration.
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("httpx", "httpcore", "openai", "anthropic", "LiteLLM"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A client's malformed JSON-RPC request is its mistake, not ours: the a2a-sdk logs it as an
    # ERROR with a stack trace (any client could fill the log with them), then as a WARNING
    # that says why; keep the warning only.
    logging.getLogger("a2a.server.routes.jsonrpc_dispatcher").addFilter(_not_a_client_mistake)


def _not_a_client_mistake(record: logging.LogRecord) -> bool:
    return record.getMessage() != "Failed to validate base JSON-RPC request"
