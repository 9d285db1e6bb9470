"""Messages in and answers out over Dapr pub/sub, through a real daprd (built from Go modules).

daprd delivers to a tap (tests/runtime/dapr_tap.py) that forwards the runtime's messages to the
runtime unchanged and records what arrives on the reply and dead-letter topics. A Resiliency
gives the pub/sub one inbound retry, so the tests see Dapr act on each answer: SUCCESS is final,
DROP goes to the dead-letter topic without a retry, RETRY is retried once, then dead-lettered.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from localcluster.model_server import ModelServer
from tests.dapr.sidecar import PUBSUB, STATE_STORE, DaprSidecar, build_daprd

from .conftest import API_KEY, Runtime, RuntimeFactory, agent_config, metric, start_runtime
from .dapr_tap import DaprTap

QUESTIONS, ANSWERS, DEAD = "questions", "answers", "questions-dead"
AUTH_TOKEN = "bearer-for-people-5f1e"
APP_TOKEN = "dapr-app-token-77c2a9"  # what daprd sends as dapr-api-token
PROVIDER_ATTEMPTS = 2  # AIAGENT_PUBSUB_MAX_ATTEMPTS
DAPR_DELIVERIES = 2  # one delivery plus the Resiliency's one retry
RESILIENCY = f"""\
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: agent-inbound
spec:
  policies:
    retries:
      once-more:
        policy: constant
        duration: 100ms
        maxRetries: {DAPR_DELIVERIES - 1}
  targets:
    components:
      {PUBSUB}:
        inbound:
          retry: once-more
"""


@dataclass
class Bus:
    dapr: DaprSidecar
    tap: DaprTap
    runtime: Runtime

    def ask(self, data: Any, event_id: str, **publish: Any) -> None:
        status = self.dapr.publish(QUESTIONS, data, metadata={"cloudevent.id": event_id}, **publish)
        assert status == 204, f"publish answered {status}; daprd log:\n{self.dapr.logs()}"

    def answer_to(self, correlation_id: str) -> dict[str, Any]:
        event = self.tap.wait_for(
            ANSWERS, lambda e: _data(e).get("correlationId") == correlation_id
        )
        return _data(event)

    def dead_letter(self, event_id: str) -> dict[str, Any]:
        return self.tap.wait_for(DEAD, lambda e: e.get("id") == event_id)

    def statuses(self, event_id: str, at_least: int = 1, timeout: float = 30) -> list[str]:
        """What the runtime told Dapr about each delivery of the event, once there were
        `at_least` (an answer can arrive before the runtime's SUCCESS reaches Dapr)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.tap.deliveries_of(lambda e: e.get("id") == event_id)
            if len(found) >= at_least or time.monotonic() > deadline:
                return [d.status for d in found]
            time.sleep(0.05)

    def metrics(self) -> str:
        headers = {"authorization": f"Bearer {AUTH_TOKEN}"}
        return httpx.get(f"{self.runtime.base_url}/metrics", headers=headers).text

    def messages(self, outcome: str) -> float:
        """aiagent_pubsub_messages_total for the questions topic and `outcome`."""
        total = "aiagent_pubsub_messages_total"
        return metric(self.metrics(), total, outcome=outcome, topic=QUESTIONS)


def _data(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    return data if isinstance(data, dict) else {}


def _wait(what: str, done: Any, again: Any, log: Any, timeout: float = 60) -> None:
    """Call `again` every 2 s until `done()`: in-memory pub/sub drops what nobody subscribes to
    yet, and daprd lists a subscription a moment before it is live."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        again()
        for _ in range(40):
            if done():
                return
            time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; daprd log:\n{log()}")


def start_bus(
    model_server: ModelServer,
    tmp_path: Path,
    model: str,
    *,
    limits: dict[str, Any] | None = None,
    resiliency: str = RESILIENCY,
    env: dict[str, str] | None = None,
) -> Iterator[Bus]:
    tap = DaprTap(PUBSUB, [ANSWERS, DEAD])
    with DaprSidecar(
        build_daprd(),
        app_id=f"bus-{model}{'-limited' if limits else ''}",
        app_port=tap.port,  # daprd waits for it, then asks it for subscriptions
        resources=[resiliency],
        env={"APP_API_TOKEN": APP_TOKEN},
    ) as dapr:
        config = agent_config(
            "langchain",
            model_server,
            model={"name": model},
            dapr={
                "enabled": True,
                "stateStore": STATE_STORE,
                "pubsub": PUBSUB,
                "subscribe": {"topic": QUESTIONS, "replyTopic": ANSWERS},  # dead letters: default
            },
            limits=limits or {},
        )
        runtime_env = {
            **dapr.env(),
            "APP_API_TOKEN": APP_TOKEN,
            "AIAGENT_AUTH_TOKEN": AUTH_TOKEN,
            "AIAGENT_PUBSUB_MAX_ATTEMPTS": str(PROVIDER_ATTEMPTS),
            **(env or {}),
        }
        runtime = start_runtime(config, tmp_path, env=runtime_env)
        tap.target = runtime.base_url
        tap.start()
        bus = Bus(dapr, tap, runtime)
        try:
            _wait(
                "daprd to subscribe",
                lambda: {QUESTIONS, ANSWERS, DEAD} <= dapr.subscribed_topics(),
                lambda: None,
                dapr.logs,
            )
            for topic in (ANSWERS, DEAD):
                _wait(
                    f"{topic} to be live",
                    lambda topic=topic: any(_data(e).get("probe") for e in tap.events(topic)),
                    lambda topic=topic: dapr.publish(topic, {"probe": True}),
                    dapr.logs,
                )
            _wait(
                f"{QUESTIONS} to be live",
                lambda: bool(tap.deliveries_of(lambda e: _data(e).get("warmUp"))),
                lambda: dapr.publish(QUESTIONS, {"input": "warming up", "warmUp": True}),
                dapr.logs,
            )
            yield bus
        finally:
            runtime.stop()
            tap.stop()


@pytest.fixture(scope="module")
def bus(model_server: ModelServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    yield from start_bus(model_server, tmp_path_factory.mktemp("bus"), "fake-model")


@pytest.fixture(scope="module")
def broken_bus(
    model_server: ModelServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bus]:
    # broken-model: the provider answers 401 to every call.
    yield from start_bus(model_server, tmp_path_factory.mktemp("broken"), "broken-model")


def test_subscription_is_programmatic_with_a_default_dead_letter_topic(bus: Bus) -> None:
    response = httpx.get(
        f"{bus.runtime.base_url}/dapr/subscribe", headers={"dapr-api-token": APP_TOKEN}
    )
    assert response.json() == [
        {
            "pubsubname": PUBSUB,
            "topic": QUESTIONS,
            "route": "/dapr/messages",
            "deadLetterTopic": DEAD,
        }
    ]
    # The sidecar's routes take its app token, not the people's bearer token (nor nothing).
    message = {"data": {"input": "hi"}, "id": "x"}
    assert httpx.post(f"{bus.runtime.base_url}/dapr/messages", json=message).status_code == 401


def test_a_question_is_answered_on_the_reply_topic(bus: Bus) -> None:
    bus.ask({"input": "hello bus", "sessionId": "bus-1", "correlationId": "c-1"}, "q-1")
    answer = bus.answer_to("c-1")
    assert answer["output"] == "Echo: hello bus (turn 1)"
    assert answer["sessionId"] == "bus-1"
    assert answer["agent"] == "langchain-bot"
    assert answer["usage"]["totalTokens"] > 0
    assert bus.statuses("q-1") == ["SUCCESS"]

    # The session lives in the state store: the next message (and an invoke) continue it.
    bus.ask({"input": "and again", "sessionId": "bus-1", "correlationId": "c-2"}, "q-2")
    assert bus.answer_to("c-2")["output"] == "Echo: and again (turn 2)"
    response = httpx.post(
        f"{bus.runtime.base_url}/v1/invoke",
        json={"input": "over HTTP now", "session_id": "bus-1"},
        headers={"authorization": f"Bearer {AUTH_TOKEN}"},
        timeout=30,
    )
    assert response.json()["output"] == "Echo: over HTTP now (turn 3)"
    assert bus.messages("success") >= 1


def test_the_cloudevent_id_is_the_default_correlation_id(bus: Bus) -> None:
    bus.ask({"input": "who is asking?"}, "ce-42")
    answer = bus.answer_to("ce-42")
    assert answer["output"] == "Echo: who is asking? (turn 1)"
    assert answer["sessionId"]  # a new session, named in the answer so it can be continued


def test_data_may_come_as_text_holding_json(bus: Bus) -> None:
    bus.ask(
        '{"input": "typed as text", "correlationId": "t-1"}', "q-text", content_type="text/plain"
    )
    assert bus.answer_to("t-1")["output"] == "Echo: typed as text (turn 1)"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("this is not JSON", "text/plain"),
        ({"question": "no input field"}, "application/json"),
        ({"input": ""}, "application/json"),
        ({"input": "hi", "sessionId": "../../etc"}, "application/json"),
        (["a", "list"], "application/json"),
    ],
    ids=["not-json", "no-input", "empty-input", "bad-session-id", "not-an-object"],
)
def test_bad_input_goes_to_the_dead_letter_topic_without_retries(
    bus: Bus,
    model_server: ModelServer,
    data: Any,
    content_type: str,
    request: pytest.FixtureRequest,
) -> None:
    event_id = f"bad-{request.node.callspec.id}"
    bus.ask(data, event_id, content_type=content_type)
    dead = bus.dead_letter(event_id)
    assert dead["topic"] == QUESTIONS  # the message as it was, moved by Dapr
    # Told DROP once; the inbound retry policy does not apply to a dropped message.
    assert bus.statuses(event_id) == ["DROP"]
    assert not [e for e in bus.tap.events(ANSWERS) if _data(e).get("correlationId") == event_id]
    assert bus.messages("drop") >= 1


def test_a_failing_provider_is_retried_then_dead_lettered(
    broken_bus: Bus, model_server: ModelServer
) -> None:
    broken_bus.ask({"input": "anyone there?", "correlationId": "f-1"}, "f-1")
    dead = broken_bus.dead_letter("f-1")
    assert _data(dead) == {"input": "anyone there?", "correlationId": "f-1"}
    # RETRY each time: Dapr delivered it once more (the Resiliency), then dead-lettered it; the
    # runtime tried the provider PROVIDER_ATTEMPTS times per delivery. Bounded, and not lost.
    assert broken_bus.statuses("f-1") == ["RETRY"] * DAPR_DELIVERIES
    calls = [
        r
        for r in model_server.recorder.requests
        if any("anyone there?" in str(m.get("content")) for m in r["messages"])
    ]
    assert len(calls) == PROVIDER_ATTEMPTS * DAPR_DELIVERIES
    assert not [e for e in broken_bus.tap.events(ANSWERS) if _data(e).get("correlationId")]
    assert broken_bus.messages("retry") >= 1
    # The provider's error echoes the API key; the runtime's log must not.
    log = broken_bus.runtime.log()
    assert "handed back to Dapr" in log
    assert API_KEY not in log


def test_no_subscription_without_a_sidecar(
    runtime_factory: RuntimeFactory, model_server: ModelServer
) -> None:
    config = agent_config(
        "langchain",
        model_server,
        dapr={"enabled": True, "pubsub": PUBSUB, "subscribe": {"topic": QUESTIONS}},
    )
    runtime = runtime_factory(config)  # no DAPR_HTTP_PORT: nothing would deliver
    assert httpx.get(f"{runtime.base_url}/dapr/subscribe").status_code == 404
    assert "no Dapr sidecar is present" in runtime.log()


LIMIT_WINDOW = 4
PATIENT_RESILIENCY = f"""\
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: agent-inbound
spec:
  policies:
    retries:
      past-the-window:
        policy: constant
        duration: 1s
        maxRetries: {3 * LIMIT_WINDOW}
  targets:
    components:
      {PUBSUB}:
        inbound:
          retry: past-the-window
"""


@pytest.fixture(scope="module")
def limited_bus(
    model_server: ModelServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bus]:
    # One request per window, and a Resiliency that keeps retrying past the window's end.
    yield from start_bus(
        model_server,
        tmp_path_factory.mktemp("limited"),
        "fake-model",
        limits={"requestsPerMinute": 1},
        resiliency=PATIENT_RESILIENCY,
        env={"AIAGENT_LIMIT_WINDOW_SECONDS": str(LIMIT_WINDOW)},
    )


def test_over_the_limit_a_message_is_handed_back_for_a_retry_not_dropped(
    limited_bus: Bus,
) -> None:
    left = LIMIT_WINDOW - time.time() % LIMIT_WINDOW
    if left < LIMIT_WINDOW - 1:  # both messages into one fresh window
        time.sleep(left + 0.1)
    limited_bus.ask({"input": "first in", "correlationId": "l-1"}, "l-1")
    limited_bus.ask({"input": "second in", "correlationId": "l-2"}, "l-2")
    # Both are answered in the end: one at once, the other once a window had room for it.
    assert limited_bus.answer_to("l-1")["output"] == "Echo: first in (turn 1)"
    assert limited_bus.answer_to("l-2")["output"] == "Echo: second in (turn 1)"
    first, second = limited_bus.statuses("l-1"), limited_bus.statuses("l-2")
    # Which is refused first depends on when Dapr delivers (on a loaded machine both first
    # deliveries may land in a window already spent): what holds is that a message over the
    # limit is handed back, and every one is answered in the end, none dead-lettered.
    assert "RETRY" in first + second, (first, second)
    assert first[-1] == second[-1] == "SUCCESS"
    assert not [e for e in limited_bus.tap.events(DEAD) if e.get("id") in ("l-1", "l-2")]
    text = limited_bus.metrics()
    assert metric(text, "aiagent_rate_limited_total", limit="requests") >= 1
    assert limited_bus.messages("retry") >= 1
