"""The agent behind A2A: an a2a-sdk AgentExecutor over our adapter, and the request handler that
checks a message before a task is made for it."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncGenerator

from a2a.helpers.proto_helpers import new_task
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import Event, EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.tasks import TaskStore, TaskUpdater
from a2a.types import AgentCard, Message, Part, SendMessageRequest, Task, TaskState
from a2a.utils.errors import ContentTypeNotSupportedError, InvalidParamsError

from ..adapters.base import AgentAdapter, ChatMessage, Usage
from ..errors import RuntimeFailure
from ..state import RuntimeState
from ..streaming import StreamPump
from .common import SESSION_ID_PATTERN

logger = logging.getLogger("agent_runtime.a2a")

ROUTE = "/a2a"  # for the error metrics, as the middleware labels the route
STREAMING_METHODS = {"SendStreamingMessage", "message/stream"}  # A2A 1.0, 0.3
TEXT_MODES = {"text/plain", "text/*", "*/*", "text"}


def message_text(message: Message) -> str:
    return "\n".join(part.text for part in message.parts)


class AgentRequestHandler(DefaultRequestHandler):
    """The SDK's handler, refusing what the agent cannot take before any task exists for it."""

    def __init__(self, state: RuntimeState, task_store: TaskStore, agent_card: AgentCard) -> None:
        super().__init__(AdapterExecutor(state), task_store, agent_card)
        self._state = state

    async def on_message_send(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> Message | Task:
        self._check(params)
        result: Message | Task = await super().on_message_send(params, context)
        return result

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        self._check(params)
        async for event in super().on_message_send_stream(params, context):
            yield event

    def _check(self, params: SendMessageRequest) -> None:
        message = params.message
        for part in message.parts:
            kind = part.WhichOneof("content")
            if kind != "text":
                media = f" ({part.media_type})" if part.media_type else ""
                raise ContentTypeNotSupportedError(
                    message=f"this agent reads text parts only; got a {kind or 'empty'} part{media}"
                )
        text = message_text(message)
        if not text.strip():
            raise InvalidParamsError(message="the message has no text")
        limit = self._state.settings.max_input_chars
        if len(text) > limit:
            raise InvalidParamsError(
                message=f"the message is {len(text)} characters long; the limit is {limit}"
            )
        if message.context_id and not re.fullmatch(SESSION_ID_PATTERN, message.context_id):
            raise InvalidParamsError(message=f"contextId must match {SESSION_ID_PATTERN}")
        accepted = set(params.configuration.accepted_output_modes)
        if accepted and not accepted & TEXT_MODES:
            raise ContentTypeNotSupportedError(
                message="this agent answers in text/plain, which acceptedOutputModes leaves out"
            )


class AdapterExecutor(AgentExecutor):
    """Runs one A2A task on the adapter: the context's conversation (its session) plus the new
    message in, the answer out as an artifact (streamed piece by piece for streaming calls) and
    as the final status message. Failures end the task as failed, with a redacted message."""

    def __init__(self, state: RuntimeState) -> None:
        self._state = state
        self._cancelled: set[str] = set()

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id, context_id = str(context.task_id), str(context.context_id)
        updater = TaskUpdater(event_queue, task_id, context_id)
        question = ChatMessage(role="user", content=context.get_user_input())
        state = self._state
        if context.current_task is None and context.message is not None:
            task = new_task(task_id, context_id, TaskState.TASK_STATE_SUBMITTED)
            task.history.append(context.message)
            await event_queue.enqueue_event(task)
        await updater.start_work()
        try:
            adapter = state.ready_adapter()
            history = await state.sessions.load(context_id)
            messages = [*history.messages, question]
            if context.call_context.state.get("method") in STREAMING_METHODS:
                answer, usage = await self._stream(adapter, messages, updater)
            else:
                answer, usage = await self._invoke(adapter, messages, updater)
            if task_id in self._cancelled:
                return
            answered = ChatMessage(role="assistant", content=answer)
            await state.sessions.append(context_id, history, [question, answered])
        except RuntimeFailure as failure:
            safe = state.safe(failure)
            logger.warning("A2A task %s failed: %s: %s", task_id, safe.error_type, safe.message)
            await self._fail(
                updater, task_id, safe.error_type, f"{safe.error_type}: {safe.message}"
            )
            return
        except Exception:
            logger.exception("A2A task %s failed", task_id)
            await self._fail(
                updater, task_id, "internal_error", "internal error; the log has details"
            )
            return
        finally:
            self._cancelled.discard(task_id)
        await updater.complete(updater.new_agent_message([Part(text=answer)]))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        # The SDK cancels the running execute() right after this; the mark keeps it from
        # publishing anything once the task is canceled.
        task_id = str(context.task_id)
        self._cancelled.add(task_id)
        await TaskUpdater(event_queue, task_id, str(context.context_id)).cancel()

    async def _invoke(
        self, adapter: AgentAdapter, messages: list[ChatMessage], updater: TaskUpdater
    ) -> tuple[str, Usage]:
        reply = await self._state.within_timeout(adapter.invoke(messages))
        if updater.task_id not in self._cancelled:
            await updater.add_artifact(
                [Part(text=reply.output)], name="answer", append=False, last_chunk=True
            )
        return reply.output, reply.usage

    async def _stream(
        self, adapter: AgentAdapter, messages: list[ChatMessage], updater: TaskUpdater
    ) -> tuple[str, Usage]:
        usage = Usage()
        # Its own task, as for chat streams: cancelling this call (CancelTask, shutdown) closes
        # the pump, which stops the provider request too.
        pump = StreamPump(adapter.stream(messages, usage))
        artifact_id = uuid.uuid4().hex
        pieces: list[str] = []
        try:
            while True:
                try:
                    piece = await self._state.within_timeout(pump.next())
                except StopAsyncIteration:
                    break
                if not piece:
                    continue
                if updater.task_id in self._cancelled:
                    break
                await updater.add_artifact(
                    [Part(text=piece)],
                    artifact_id=artifact_id,
                    name="answer",
                    append=bool(pieces),
                    last_chunk=False,
                )
                pieces.append(piece)
            if updater.task_id not in self._cancelled:
                await updater.add_artifact(
                    [Part(text="")],
                    artifact_id=artifact_id,
                    name="answer",
                    append=bool(pieces),
                    last_chunk=True,
                )
        finally:
            await pump.close()
        return "".join(pieces), usage

    async def _fail(self, updater: TaskUpdater, task_id: str, error_type: str, text: str) -> None:
        self._state.metrics.errors.labels(ROUTE, error_type).inc()
        if task_id not in self._cancelled:
            await updater.failed(updater.new_agent_message([Part(text=text)]))
