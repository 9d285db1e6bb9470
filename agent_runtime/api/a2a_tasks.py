"""A2A tasks kept in the runtime's session store (process memory, or Dapr state shared by every
replica), behind the a2a-sdk's TaskStore interface."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from a2a.server.context import ServerCallContext
from a2a.server.tasks import InMemoryTaskStore, TaskStore
from a2a.types import ListTasksRequest, ListTasksResponse, Task, TaskState
from a2a.utils.errors import InternalError
from google.protobuf.json_format import MessageToDict, ParseDict  # type: ignore[import-untyped]

from ..errors import Redactor, RuntimeFailure
from ..sessions import SAVE_ATTEMPTS, SAVE_BACKOFF_SECONDS, SessionStore
from .common import SESSION_ID_PATTERN

logger = logging.getLogger("agent_runtime.a2a")
T = TypeVar("T")
Entries = list[list[str]]  # the index: [task id, context id], oldest first

# Record keys; a task id is checked against the session id pattern before it becomes a key.
TASK_KEY = "a2a-task-{}"
INDEX_KEY = "a2a-tasks"
# ListTasks sees the most recent tasks only: the index is one record, read whole.
INDEX_LIMIT = 1000
# Each event of a running task is a save (working, then one per streamed piece of the answer):
# a running task's saves within this many seconds of its last write are folded into one, so a
# Dapr store sees a few writes a second per stream, not one per token, and a quick answer costs
# two writes (submitted, then the final state). A task's first save and its final state are
# written at once; what another replica's GetTask sees of a running task lags by at most this.
COALESCE_SECONDS = 0.25
FINAL_STATES = {
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_CANCELED,
    TaskState.TASK_STATE_FAILED,
    TaskState.TASK_STATE_REJECTED,
    TaskState.TASK_STATE_INPUT_REQUIRED,
    TaskState.TASK_STATE_AUTH_REQUIRED,
}


class SessionTaskStore(TaskStore):
    """Each task is a JSON record (the A2A JSON form of the task); an index record lists the
    recent ones for ListTasks. One replica runs a task and is its only writer, so task saves
    overwrite; index updates are first-write-wins, retried like session turns. A task's index
    update runs beside the agent (a read and a write of the whole index are not the caller's
    wait) and its final save waits for it, so a finished task is always listed."""

    def __init__(self, sessions: SessionStore, redact: Redactor) -> None:
        self._sessions = sessions
        self._redact = redact
        self._written: dict[str, tuple[int, float]] = {}  # task id -> (state, when) last saved
        self._pending: dict[str, Task] = {}  # saves folded into a later write
        self._locks: dict[str, asyncio.Lock] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        self._indexed: OrderedDict[str, None] = OrderedDict()
        self._indexing: dict[str, asyncio.Task[None]] = {}  # task id -> its index update

    async def save(self, task: Task, context: ServerCallContext) -> None:
        state = task.status.state
        last = self._written.get(task.id)
        if (
            state not in FINAL_STATES
            and last is not None
            and time.monotonic() - last[1] < COALESCE_SECONDS
        ):
            copy = Task()
            copy.CopyFrom(task)
            first = task.id not in self._pending
            self._pending[task.id] = copy
            if first:
                flush = asyncio.create_task(self._flush_later(task.id))
                self._flushes.add(flush)
                flush.add_done_callback(self._flushes.discard)
            return
        async with self._lock(task.id):
            self._pending.pop(task.id, None)  # this save is newer than anything folded
            await self._write(task)
        if task.id not in self._indexed and task.id not in self._indexing:
            indexing = asyncio.create_task(self._index(task))
            self._indexing[task.id] = indexing
            indexing.add_done_callback(lambda _: self._indexing.pop(task.id, None))
        if state in FINAL_STATES:
            self._written.pop(task.id, None)
            self._locks.pop(task.id, None)
            if task.id in self._indexing:  # a cancelled caller does not cancel the update
                await asyncio.shield(self._indexing[task.id])

    async def get(self, task_id: str, context: ServerCallContext) -> Task | None:
        if not re.fullmatch(SESSION_ID_PATTERN, task_id):
            return None  # never a key: no such task
        record = await self._call(self._sessions.load_record(TASK_KEY.format(task_id)))
        if not isinstance(record.value, dict):
            return None
        task: Task = ParseDict(record.value, Task(), ignore_unknown_fields=True)
        return task

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        # This replica's own tasks are listed as soon as they exist: their updates land first.
        await asyncio.gather(*(asyncio.shield(i) for i in list(self._indexing.values())))
        entries = await self._index_entries()
        if params.context_id:
            entries = [e for e in entries if e[1] == params.context_id]
        limit = asyncio.Semaphore(16)  # a bounded number of store reads at once

        async def fetch(task_id: str) -> Task | None:
            async with limit:
                return await self.get(task_id, context)

        tasks = await asyncio.gather(*(fetch(e[0]) for e in entries))
        # The SDK's in-memory store does the filtering, ordering and paging, as it would for
        # its own tasks.
        page = InMemoryTaskStore(use_copying=False)
        for task in tasks:
            if task is not None:
                await page.save(task, context)
        return await page.list(params, context)

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        if not re.fullmatch(SESSION_ID_PATTERN, task_id):
            return
        await self._call(self._sessions.delete_record(TASK_KEY.format(task_id)))
        await self._update_index(lambda entries: [e for e in entries if e[0] != task_id])

    def _lock(self, task_id: str) -> asyncio.Lock:
        return self._locks.setdefault(task_id, asyncio.Lock())

    async def _write(self, task: Task) -> None:
        value = MessageToDict(task)
        await self._call(self._sessions.save_record(TASK_KEY.format(task.id), value))
        self._written[task.id] = (task.status.state, time.monotonic())

    async def _flush_later(self, task_id: str) -> None:
        await asyncio.sleep(COALESCE_SECONDS)
        async with self._lock(task_id):
            task = self._pending.pop(task_id, None)
            if task is None:
                return  # a newer save already wrote it
            try:
                await self._write(task)
            except Exception as exc:  # a later save writes the task again; say why this one failed
                logger.warning("saving A2A task %s failed: %s", task_id, exc)

    async def _index(self, task: Task) -> None:
        def add(entries: Entries) -> Entries | None:
            if any(e[0] == task.id for e in entries):
                return None
            return [*entries, [task.id, task.context_id]][-INDEX_LIMIT:]

        try:
            await self._update_index(add)
        except Exception as exc:  # the task itself is stored; only ListTasks misses it
            logger.warning("listing A2A task %s in the index failed: %s", task.id, exc)
            return
        self._indexed[task.id] = None
        while len(self._indexed) > INDEX_LIMIT:
            self._indexed.popitem(last=False)

    async def _index_entries(self) -> Entries:
        record = await self._call(self._sessions.load_record(INDEX_KEY))
        return _entries(record.value)

    async def _update_index(self, change: Callable[[Entries], Entries | None]) -> None:
        """Apply `change` (entries -> new entries, or None for no change) to the index."""
        for attempt in range(1, SAVE_ATTEMPTS + 1):
            read = await self._call(self._sessions.load_record(INDEX_KEY))
            entries = change(_entries(read.value))
            if entries is None:
                return
            if await self._call(self._sessions.save_record(INDEX_KEY, entries, read)):
                return
            await asyncio.sleep(random.uniform(0, SAVE_BACKOFF_SECONDS * attempt))
        # The tasks themselves are stored; only ListTasks misses this change.
        logger.warning("the A2A task index kept changing; gave up after %d tries", SAVE_ATTEMPTS)

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except RuntimeFailure as failure:  # the state store failed: say so, without secrets
            raise InternalError(message=self._redact(failure.message)) from None


def _entries(value: Any) -> Entries:
    if not isinstance(value, list):
        return []
    return [e for e in value if isinstance(e, list) and len(e) == 2]
