"""`python -m aiagent_operator` (or `aiagent-operator`): run the operator with settings from env."""

from __future__ import annotations

import logging

import kopf

from .settings import OperatorSettings


def main() -> None:
    settings = OperatorSettings()
    kopf.configure(
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
        log_prefix=True,  # every line about an object says which one: [namespace/name]
    )
    logging.getLogger().setLevel(settings.log_level)
    from . import handlers  # noqa: F401  (registers the handlers with Kopf)

    kopf.run(
        clusterwide=not settings.watch_namespaces,
        namespaces=settings.watch_namespaces,
        liveness_endpoint=settings.liveness_endpoint or None,
        standalone=settings.standalone,
        peering_name=None if settings.standalone else settings.peering_name,
        priority=settings.peering_priority,
    )


if __name__ == "__main__":
    main()
