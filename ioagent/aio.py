"""asyncio helpers that always let a task be stopped, within a bound.

Python 3.11's ``asyncio.wait_for`` returns the result instead of raising when a cancellation
races with the awaited thing finishing, so the cancellation is lost; and on timeout it cancels
the inner task and then waits, without a bound, for that task to finish cancelling. A daemon
loop built on it can therefore ignore the one cancellation its ``TaskGroup`` sends, and a stop
then waits forever (issue "Nothing hangs"). ``contextlib.suppress(CancelledError)`` around
``await child`` has the same effect on the *caller's* own cancellation.

So ioagent never uses ``wait_for`` or that suppress. It uses these instead:

* :func:`wait_event` — wait for an event with a timeout (``asyncio.timeout`` underneath, which
  counts cancellations and never swallows one that is not its own);
* :func:`keeping_cancellation` — await a library call that uses ``wait_for`` inside (aiomqtt),
  then raise a cancellation it may have swallowed;
* :func:`cancel_and_wait` — cancel a task and wait for it, re-cancelling after a grace period
  and giving up after a bound, never hiding the caller's own cancellation;
* :func:`describe_tasks` — the stacks of tasks that did not stop, for the log.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")

RECANCEL_EVERY = 0.25
"""After the grace period a task that is still running is cancelled again this often: each
cancellation that a library swallowed is followed by another, which lands."""


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass; True if it is set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(max(0.0, seconds)):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


async def keeping_cancellation(call: Awaitable[T]) -> T:
    """Await ``call``, then re-raise a cancellation that it may have swallowed."""
    result = await call
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    return result


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[object]] | asyncio.Task[object],
    *,
    grace: float,
    bound: float,
) -> set[asyncio.Task[object]]:
    """Cancel ``tasks`` and wait for them; return the ones still running after ``bound`` s.

    For ``grace`` seconds each task gets one cancellation only, so that a clean-up that is
    allowed to take time (resuming smart control during a resync) can finish; after that
    every task still running is cancelled again every :data:`RECANCEL_EVERY` seconds, so a
    swallowed cancellation cannot keep it alive. The caller's own cancellation is never
    suppressed: ``asyncio.wait`` does not cancel what it waits for.
    """
    pending = {tasks} if isinstance(tasks, asyncio.Task) else set(tasks)
    pending = {task for task in pending if not task.done()}
    for task in pending:
        task.cancel()
    loop = asyncio.get_running_loop()
    start = loop.time()
    grace = min(grace, bound)
    while pending:
        elapsed = loop.time() - start
        if elapsed >= bound:
            break
        step = grace - elapsed if elapsed < grace else RECANCEL_EVERY
        _, pending = await asyncio.wait(pending, timeout=min(step, bound - elapsed))
        if loop.time() - start >= grace:
            for task in pending:
                task.cancel()
    return pending


def describe_tasks(tasks: Iterable[asyncio.Task[object]], *, limit: int = 12) -> str:
    """Each task's name and where it is waiting, innermost frames last."""
    out = io.StringIO()
    for task in sorted(tasks, key=lambda t: t.get_name()):
        out.write(f"--- task {task.get_name()!r} ({'done' if task.done() else 'running'})\n")
        task.print_stack(limit=limit, file=out)
    return out.getvalue()


__all__ = [
    "RECANCEL_EVERY",
    "cancel_and_wait",
    "describe_tasks",
    "keeping_cancellation",
    "wait_event",
]
