"""The cancellation helpers (ioagent/aio.py), and the race that used to hang every stop.

The race (issue "Nothing hangs"): the supervisor's task group cancels ``boundaries`` in the same
event-loop turn in which a finished poll sets ``plan_changed``. Python 3.11's ``wait_for`` then
returns instead of raising, the loop goes round again, and the group, which cancels only once,
waits for it forever. It was seen in CI under load; here it is made to happen every time.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from datetime import datetime

import pytest

from ioagent.aio import cancel_and_wait, describe_tasks, keeping_cancellation, wait_event
from ioagent.config import Settings
from ioagent.runtime.daemon import Daemon, _Stop
from ioagent.simulator.state import DEFAULT_API_KEY

pytestmark = pytest.mark.timeout(60)


async def test_wait_event_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.05) is False
    asyncio.get_running_loop().call_later(0.02, event.set)
    assert await wait_event(event, 5.0) is True
    assert await wait_event(event, 0.0) is True


async def set_and_cancel_in_one_turn(waiter: asyncio.Task[object], event: asyncio.Event) -> None:
    """The event is set and the waiting task cancelled before the task runs again."""
    await asyncio.sleep(0.05)  # the waiter is parked inside its wait
    event.set()
    waiter.cancel()


async def test_wait_event_never_swallows_a_cancellation_that_races_with_the_event() -> None:
    event = asyncio.Event()
    waiter = asyncio.create_task(wait_event(event, 30.0))
    await set_and_cancel_in_one_turn(waiter, event)
    done, _ = await asyncio.wait({waiter}, timeout=5)
    assert done and waiter.cancelled(), "the cancellation was lost"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the stdlib race was fixed in 3.12")
async def test_python_311_wait_for_loses_that_cancellation() -> None:
    # Why ioagent does not use wait_for: this is the behaviour that hung the daemon.
    event = asyncio.Event()
    waiter = asyncio.create_task(asyncio.wait_for(event.wait(), 30.0))
    await set_and_cancel_in_one_turn(waiter, event)
    await asyncio.wait({waiter}, timeout=5)
    assert waiter.done() and not waiter.cancelled() and waiter.result() is True


async def test_keeping_cancellation_re_raises_what_the_call_swallowed() -> None:
    async def swallowing() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "finished anyway"  # what 3.11's wait_for inside aiomqtt can do
        return "slept"

    task = asyncio.create_task(keeping_cancellation(swallowing()))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()


async def test_cancel_and_wait_cancels_again_after_the_grace() -> None:
    swallowed = 0

    async def loses_the_first_cancellation() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1

    task = asyncio.create_task(loses_the_first_cancellation())
    await asyncio.sleep(0.02)
    loop = asyncio.get_running_loop()
    started = loop.time()
    still = await cancel_and_wait(task, grace=0.3, bound=3.0)
    assert still == set()
    assert task.cancelled() and swallowed == 1
    assert loop.time() - started >= 0.3, "the first cancellation got its grace"


async def test_cancel_and_wait_gives_up_after_its_bound_and_names_the_task() -> None:
    release = asyncio.Event()

    async def ignores_every_cancellation() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(ignores_every_cancellation(), name="stubborn")
    await asyncio.sleep(0.02)
    loop = asyncio.get_running_loop()
    started = loop.time()
    still = await cancel_and_wait(task, grace=0.1, bound=0.6)
    elapsed = loop.time() - started
    assert still == {task}
    assert 0.6 <= elapsed < 2.0
    assert "stubborn" in describe_tasks(still) and "ignores_every_cancellation" in (
        describe_tasks(still)
    )
    release.set()
    await cancel_and_wait(task, grace=0.0, bound=2.0)


async def test_cancel_and_wait_does_not_hide_the_callers_own_cancellation() -> None:
    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.5)

    child = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0.02)
    caller = asyncio.create_task(cancel_and_wait(child, grace=5.0, bound=10.0))
    await asyncio.sleep(0.05)
    caller.cancel()
    await asyncio.wait({caller}, timeout=2)
    assert caller.cancelled()
    await asyncio.wait({child}, timeout=2)


@dataclass
class _NoTransitions:
    next_transition: datetime | None = None


class _QuietAgent:
    """Just enough of an agent for the boundaries loop: no plan, no transition coming."""

    have_plan = False

    async def publish_tariff(self, now: datetime) -> _NoTransitions:
        return _NoTransitions()


@pytest.mark.parametrize("turns_between", [0, 1, 2])
async def test_a_stop_as_a_poll_finishes_ends_the_boundaries_task(turns_between: int) -> None:
    settings = Settings.model_validate({"octopus": {"api_key": DEFAULT_API_KEY}})
    daemon = Daemon(settings)
    daemon.agent = _QuietAgent()  # type: ignore[assignment]
    daemon.victron = None

    async def poll_finishes_then_stop() -> None:
        await asyncio.sleep(0.05)  # boundaries is waiting for a plan change
        daemon.plan_changed.set()  # what a finished poll or an ok reply does
        for _ in range(turns_between):
            await asyncio.sleep(0)
        raise _Stop  # the shutdown task ends the group

    async def supervisor() -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(daemon._boundaries(), name="boundaries")
                group.create_task(poll_finishes_then_stop(), name="shutdown")
        except* _Stop:
            pass

    task = asyncio.create_task(supervisor())
    done, _ = await asyncio.wait({task}, timeout=3)
    if not done:
        stacks = describe_tasks(asyncio.all_tasks() - {asyncio.current_task()})
        for other in asyncio.all_tasks() - {asyncio.current_task()}:
            other.cancel()  # a second cancellation ends it, so this test itself cannot hang
        pytest.fail(f"the task group did not end: boundaries lost its cancellation\n{stacks}")
