"""Events on an AIAgent: one for each change of its state that a person must act on (a missing
Secret or ModelConfig, a crash loop, a refused child, a stalled rollout), and one when it is
Ready again after such a state, so `kubectl describe aiagent` and `kubectl events` tell the story.
Routine progress (a rollout, a scale-up) makes none: the status says it, and it needs no one.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Literal

from . import api
from .kube import Kube, KubeError
from .render import FIELD_MANAGER
from .status import READY, now_rfc3339

logger = logging.getLogger(__name__)
EventType = Literal["Normal", "Warning"]
# Phases that need a person: the Ready condition's reason and message say what to do.
ACT_ON: frozenset[str] = frozenset({"Pending", "Degraded", "Failed"})
MAX_MESSAGE = 1024  # what `kubectl describe` shows well; the status keeps the whole message


def _ready(status: api.AIAgentStatus) -> api.Condition | None:
    return next((c for c in status.conditions if c.type == READY), None)


def transition(
    before: api.AIAgentStatus, after: api.AIAgentStatus
) -> tuple[EventType, str, str] | None:
    """(type, reason, message) of the Event a status change deserves, or None. Pure."""
    now, then = _ready(after), _ready(before)
    if now is None or (then is not None and (then.status, then.reason) == (now.status, now.reason)):
        return None
    if after.phase in ACT_ON:
        return "Warning", now.reason, now.message
    if now.status == "True" and before.phase in ACT_ON:
        was = f"{before.phase}, {then.reason}" if then else before.phase
        return "Normal", "Ready", f"ready again ({now.message or now.reason}; was {was})"
    return None


def post(kube: Kube, agent: api.AIAgent, kind: EventType, reason: str, message: str) -> None:
    """Post an Event on the agent; a failure to do so is logged, never raised (the status has
    it all)."""
    timestamp = now_rfc3339()
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{agent.name}.", "namespace": agent.namespace},
        "involvedObject": {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "name": agent.name,
            "namespace": agent.namespace,
            "uid": agent.uid,
        },
        "type": kind,
        "reason": reason[:128],
        "message": message[:MAX_MESSAGE],
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "reportingInstance": os.environ.get("HOSTNAME") or socket.gethostname(),
        "firstTimestamp": timestamp,
        "lastTimestamp": timestamp,
        "count": 1,
    }
    try:
        kube.create(event)
    except KubeError as exc:
        logger.warning("%s/%s: cannot post an event: %s", agent.namespace, agent.name, exc.message)


def announce(
    kube: Kube, agent: api.AIAgent, before: api.AIAgentStatus, after: api.AIAgentStatus
) -> None:
    """Post the Event the change from `before` to `after` deserves, if any."""
    change = transition(before, after)
    if change is not None:
        post(kube, agent, *change)
