"""Dapr pub/sub: questions in from `dapr.subscribe.topic`, answers out on its `replyTopic`.

Dapr asks the app which topics it wants (`GET /dapr/subscribe`, programmatic subscription) and
delivers each message as a CloudEvent to `POST /dapr/messages`. What the route answers decides
the message's fate (dapr v1.18 pkg/runtime/subscription/postman/http/http.go, Deliver, and
pkg/runtime/subscription/subscription.go):

- `{"status": "SUCCESS"}`: the answer was published; the message is done.
- `{"status": "DROP"}`: bad input. Dapr does not retry it and publishes it to the dead-letter
  topic at once.
- `{"status": "RETRY"}`: the provider (or the state store, or publishing) still failed after
  the runtime's own attempts, or the agent's limits (agent.yaml `limits`, the same budget as
  HTTP requests) are spent for now. Dapr retries as its resiliency policy for the component says
  (none unless one is configured), then publishes it to the dead-letter topic. Only if that
  publish fails too does Dapr hand the failure to the broker component (its redelivery rules).

Every route here answers 200 with one of those: any other status (a 422, say) would make Dapr
retry a message that can never succeed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Request

from ..adapters.base import AgentAdapter, AgentReply, ChatMessage
from ..config import DaprSubscription
from ..errors import RuntimeFailure
from ..limits import RateLimited
from ..state import RuntimeState
from .common import SESSION_ID_PATTERN, State

logger = logging.getLogger("agent_runtime.pubsub")

MESSAGES_ROUTE = "/dapr/messages"
# The provider is retried in process before the message goes back to Dapr; the pause doubles.
RETRY_BACKOFF_SECONDS = 0.5
RETRY_BACKOFF_MAX_SECONDS = 4.0
# How long a message waits for the agent to be built (Dapr delivers as soon as the app listens).
BUILD_WAIT_SECONDS = 120.0
MAX_CORRELATION_ID_CHARS = 256

Status = Literal["SUCCESS", "DROP", "RETRY"]
router = APIRouter(tags=["dapr"])


class BadMessage(ValueError):
    """A message no retry can help: Dapr is told to DROP it (to the dead-letter topic)."""


@dataclass(frozen=True)
class Question:
    input: str
    session_id: str
    correlation_id: str
    traceparent: str | None


def subscription_of(state: RuntimeState) -> tuple[str, DaprSubscription]:
    dapr = state.config.dapr
    # The routes are only mounted when both are set (see app.create_app).
    assert dapr.pubsub and dapr.subscribe
    return dapr.pubsub, dapr.subscribe


@router.get("/dapr/subscribe")
async def subscriptions(state: State) -> list[dict[str, str]]:
    """Dapr's programmatic subscription: the topic, the route, the dead-letter topic."""
    pubsub, subscribe = subscription_of(state)
    return [
        {
            "pubsubname": pubsub,
            "topic": subscribe.topic,
            "route": MESSAGES_ROUTE,
            "deadLetterTopic": subscribe.dead_letter,
        }
    ]


@router.post(MESSAGES_ROUTE)
async def message(request: Request, state: State) -> dict[str, Status]:
    """One CloudEvent from the subscribed topic: answer it and publish the answer."""
    pubsub, subscribe = subscription_of(state)
    status = await _handle(await request.body(), state, pubsub, subscribe)
    state.metrics.pubsub_messages.labels(subscribe.topic, status.lower()).inc()
    return {"status": status}


async def _handle(
    body: bytes, state: RuntimeState, pubsub: str, subscribe: DaprSubscription
) -> Status:
    try:
        question = parse_question(body, state.settings.max_input_chars)
    except BadMessage as exc:
        logger.warning(
            "dropping a message from %s (to %s): %s", subscribe.topic, subscribe.dead_letter, exc
        )
        return "DROP"
    if state.limiter is not None:
        try:
            await state.limiter.admit()
        except RateLimited as refusal:
            logger.info(
                "message %s from %s handed back to Dapr: %s",
                question.correlation_id,
                subscribe.topic,
                refusal.message,
            )
            return "RETRY"
    try:
        return await _answer_and_publish(state, question, pubsub, subscribe)
    finally:
        if state.limiter is not None:
            state.limiter.release()


async def _answer_and_publish(
    state: RuntimeState, question: Question, pubsub: str, subscribe: DaprSubscription
) -> Status:
    try:
        reply = await _answer(state, question)
        assert state.publisher is not None
        await state.publisher.publish(
            pubsub,
            subscribe.replies,
            {
                "correlationId": question.correlation_id,
                "sessionId": question.session_id,
                "output": reply.output,
                "agent": state.config.name,
                "usage": {
                    "inputTokens": reply.usage.input_tokens,
                    "outputTokens": reply.usage.output_tokens,
                    "totalTokens": reply.usage.total_tokens,
                },
            },
            traceparent=question.traceparent,
        )
    except RuntimeFailure as failure:
        logger.warning(
            "message %s from %s handed back to Dapr (retry, then %s): %s",
            question.correlation_id,
            subscribe.topic,
            subscribe.dead_letter,
            state.redact(failure.message),
        )
        return "RETRY"
    return "SUCCESS"


async def _answer(state: RuntimeState, question: Question) -> AgentReply:
    adapter = await state.built_adapter(BUILD_WAIT_SECONDS)
    history = await state.sessions.load(question.session_id)
    asked = ChatMessage(role="user", content=question.input)
    reply = await _invoke(state, adapter, [*history.messages, asked], question.correlation_id)
    answer = ChatMessage(role="assistant", content=reply.output)
    # Recorded before the answer is published: if publishing fails, Dapr redelivers and the
    # turn may be recorded twice (at-least-once), but an answer never outruns its memory.
    await state.sessions.append(question.session_id, history, [asked, answer])
    return reply


async def _invoke(
    state: RuntimeState, adapter: AgentAdapter, messages: list[ChatMessage], correlation: str
) -> AgentReply:
    """The agent's answer, trying a failing provider `pubsub_max_attempts` times in all."""
    attempts = state.settings.pubsub_max_attempts
    attempt = 1
    while True:
        try:
            return await state.within_timeout(adapter.invoke(messages))
        except RuntimeFailure as failure:
            if attempt >= attempts:
                raise
            pause = min(RETRY_BACKOFF_SECONDS * 2 ** (attempt - 1), RETRY_BACKOFF_MAX_SECONDS)
            logger.info(
                "message %s: attempt %d of %d failed (%s); again in %.1f s",
                correlation,
                attempt,
                attempts,
                state.redact(failure.message),
                pause,
            )
        await asyncio.sleep(pause)
        attempt += 1


def parse_question(body: bytes, max_input_chars: int) -> Question:
    """The question a CloudEvent carries; BadMessage says why there is none.

    data is `{"input": "...", "sessionId": optional, "correlationId": optional}`, as a JSON
    object (content type application/json), a string holding one, or base64 (`data_base64`).
    An event published with Dapr's rawPayload arrives without an envelope: the body is the data.
    Without a correlationId the CloudEvent's `id` stands in: Dapr gives every event one.
    """
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise BadMessage("the body is not JSON") from None
    if not isinstance(event, dict):
        raise BadMessage("the body is not a JSON object")
    data = _data_of(event)
    text = data.get("input")
    if not isinstance(text, str) or not text.strip():
        raise BadMessage('data has no "input" (a non-empty string)')
    if len(text) > max_input_chars:
        raise BadMessage(f"input is {len(text)} characters long; the limit is {max_input_chars}")
    session_id = data.get("sessionId")
    if session_id is None:
        session_id = uuid.uuid4().hex
    elif not isinstance(session_id, str) or not re.fullmatch(SESSION_ID_PATTERN, session_id):
        raise BadMessage(f"sessionId must match {SESSION_ID_PATTERN}")
    correlation = data.get("correlationId")
    if correlation is None:
        correlation = event.get("id")
    if correlation is None:
        correlation = uuid.uuid4().hex
    if isinstance(correlation, bool) or not isinstance(correlation, str | int):
        raise BadMessage("correlationId must be a string")
    correlation = str(correlation)
    if not correlation or len(correlation) > MAX_CORRELATION_ID_CHARS:
        raise BadMessage(f"correlationId must be 1 to {MAX_CORRELATION_ID_CHARS} characters")
    traceparent = event.get("traceparent")
    return Question(
        input=text,
        session_id=session_id,
        correlation_id=correlation,
        traceparent=traceparent if isinstance(traceparent, str) else None,
    )


def _data_of(event: dict[str, Any]) -> dict[str, Any]:
    if "data_base64" in event:
        try:
            raw: Any = base64.b64decode(str(event["data_base64"]), validate=True)
        except (binascii.Error, ValueError):
            raise BadMessage("data_base64 is not base64") from None
    elif "data" in event:
        raw = event["data"]
    elif "specversion" in event:
        raise BadMessage("the CloudEvent has no data")
    else:
        raw = event  # rawPayload: no envelope
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise BadMessage("data is not JSON") from None
    if not isinstance(raw, dict):
        raise BadMessage("data is not a JSON object")
    return raw
