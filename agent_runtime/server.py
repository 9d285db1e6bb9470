"""Run the app under uvicorn: graceful shutdown, one log format, a non-zero exit if the agent
cannot be built (so a pod crash-loops visibly instead of idling unready)."""

from __future__ import annotations

import logging
import os

import uvicorn

from .app import create_app
from .config import AgentConfig
from .errors import Redactor
from .http_protocol import protocol_with_head_deadline
from .logs import configure_logging
from .settings import RuntimeSettings


def serve(config: AgentConfig, host: str, port: int) -> int:
    settings = RuntimeSettings.from_environment()
    configure_logging(settings.log_format, Redactor(settings.secrets(config)))
    failed: list[str] = []
    server: uvicorn.Server | None = None

    def on_fatal(message: str) -> None:
        failed.append(message)
        write_termination_message(settings.termination_log, message)
        if server is not None:
            server.should_exit = True

    app = create_app(config, settings, on_fatal=on_fatal)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,  # keep our JSON formatter
            access_log=False,
            # SIGTERM: stop accepting, let in-flight requests finish within the grace period.
            timeout_graceful_shutdown=settings.shutdown_grace_seconds,
            timeout_keep_alive=30,
            # Slow-loris: a request's head has a deadline (the middleware times the body).
            http=protocol_with_head_deadline(settings.header_timeout_seconds),
        )
    )
    server.run()
    if failed:
        logging.getLogger("agent_runtime").error("exiting: %s", failed[0])
        return 1
    return 0


def write_termination_message(path: str, message: str) -> None:
    """Leave the reason the agent stopped where Kubernetes reads it (the kubelet creates the
    file; elsewhere there is none): the pod's status, and so the AIAgent's, then says it."""
    if not path or not os.path.exists(path):
        return
    try:
        with open(path, "w") as handle:
            handle.write(message[-4096:])  # the kubelet keeps at most 4 KiB
    except OSError as exc:
        logging.getLogger("agent_runtime").warning("cannot write %s: %s", path, exc.strerror)
