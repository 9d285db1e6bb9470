"""Kopf's readiness gate with the fix in `kopf_fixes`: the same answers, linear work."""

from __future__ import annotations

import asyncio
import sys

import pytest

sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]  # as the operator does

from kopf._cogs.aiokits import aiotoggles  # noqa: E402

from aiagent_operator import kopf_fixes  # noqa: E402


@pytest.fixture(autouse=True)
def fixed() -> None:
    kopf_fixes.install()


def test_many_waiters_wake_once_each_when_the_last_toggle_drops() -> None:
    """The startup shape: one toggle per listed object, one waiting worker per object."""
    n = 2000
    looks = 0

    async def scenario() -> None:
        nonlocal looks
        gate = aiotoggles.ToggleSet(all)
        toggles = [await gate.make_toggle(name=str(i)) for i in range(n)]
        original = gate.is_on

        def counted() -> bool:
            nonlocal looks
            looks += 1
            return original()

        gate.is_on = counted  # type: ignore[method-assign]
        passed = 0

        async def worker() -> None:
            nonlocal passed
            await gate.wait_for(True)
            passed += 1

        workers = [asyncio.create_task(worker()) for _ in range(n)]
        await asyncio.sleep(0)
        for toggle in toggles[:-1]:
            await gate.drop_toggle(toggle)
            await asyncio.sleep(0)
        assert passed == 0, "a worker passed the gate while a toggle was still off"
        await gate.drop_toggle(toggles[-1])
        await asyncio.wait_for(asyncio.gather(*workers), timeout=10)
        assert passed == n

    asyncio.run(scenario())
    # Kopf's own wait looks once per waiter per change: n * n (4 000 000) here.
    assert looks < 10 * n, looks


def test_any_and_all_sets_answer_as_before() -> None:
    async def scenario() -> None:
        paused = aiotoggles.ToggleSet(any)  # Kopf's operator pause
        await paused.wait_for(False)  # no toggles: off, returns at once
        toggle = await paused.make_toggle(True)
        waiting = asyncio.create_task(paused.wait_for(False))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await toggle.turn_to(False)  # a toggle's own change wakes the waiters too
        await asyncio.wait_for(waiting, timeout=5)

        indexed = aiotoggles.ToggleSet(all)
        await indexed.wait_for(True)  # no toggles: on
        off = await indexed.make_toggle(False)
        waiting = asyncio.create_task(indexed.wait_for(True))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await off.turn_to(True)
        await asyncio.wait_for(waiting, timeout=5)

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_others_waiting() -> None:
    async def scenario() -> None:
        gate = aiotoggles.ToggleSet(all)
        toggle = await gate.make_toggle(False)
        first = asyncio.create_task(gate.wait_for(True))
        second = asyncio.create_task(gate.wait_for(True))
        await asyncio.sleep(0.01)
        first.cancel()
        await asyncio.sleep(0.01)
        assert first.cancelled() and not second.done()
        await gate.drop_toggle(toggle)
        await asyncio.wait_for(second, timeout=5)

    asyncio.run(scenario())
