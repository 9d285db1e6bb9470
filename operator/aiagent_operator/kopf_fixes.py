"""Kopf's readiness gate, made linear in the number of objects (Kopf 1.45).

At startup Kopf holds every object's handlers until all indices are filled: each listed object
adds a toggle to one `ToggleSet` and drops it once indexed, and each object's worker waits on the
set's condition. Every add and drop wakes every waiter (`notify_all`), and each waiter takes the
condition's lock in turn to look: N objects cost N² wake-ups. Measured on a restart with 1000
agents (6000 watched objects): the operator resumed nothing for minutes, busy on the event loop.

Here one task per wanted state waits on the condition, and the object workers wait on that one
task: the same answer, N wake-ups. To propose upstream (kopf._cogs.aiokits.aiotoggles).
"""

from __future__ import annotations

import asyncio
import weakref

from kopf._cogs.aiokits import aiotoggles

_shared: weakref.WeakKeyDictionary[aiotoggles.ToggleSet, dict[bool, asyncio.Future[None]]] = (
    weakref.WeakKeyDictionary()
)
_original_wait_for = aiotoggles.ToggleSet.wait_for


async def _wait_for(self: aiotoggles.ToggleSet, state: bool) -> None:
    wanted = bool(state)
    if self.is_on() == wanted:
        return  # no lock, no wake-up: the common case once the operator runs
    waiting = _shared.setdefault(self, {})
    shared = waiting.get(wanted)
    if shared is None or shared.done():
        shared = waiting[wanted] = asyncio.ensure_future(_original_wait_for(self, wanted))
    # A waiter cancelled (the operator stopping) leaves the shared wait to the others.
    await asyncio.shield(shared)


def install() -> None:
    aiotoggles.ToggleSet.wait_for = _wait_for  # type: ignore[method-assign]
