"""Runs validated commands against the Kraken API, one at a time, and replies exactly once.

Validation (``ioagent.mqtt.commands``) happens as the message arrives, so invalid input is answered
at once and makes no API call. Valid commands wait in a queue for the ``commands`` task: the
MQTT receive loop never blocks on Octopus, and a re-sync's pause holds up nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, time

from ioagent.kraken.errors import (
    ApiChanged,
    AuthFailed,
    CommandRefused,
    KrakenError,
    RateLimited,
)
from ioagent.logs import get_logger
from ioagent.mqtt.commands import STALE_REASON, Command, CommandRejection
from ioagent.runtime.agent import AccountAgent
from ioagent.runtime.poller import Poller
from ioagent.timeutil import Clock, iso_z

log = get_logger(__name__)

ReplyFn = Callable[[Command | CommandRejection, str, str | None], Awaitable[None]]
"""reply(command, status, error)."""

RESYNC_PAUSE_SECONDS = 30.0
RESUME_ATTEMPTS = 5
RESUME_SHUTDOWN_GRACE = 4.0
"""A stop waits this long for the resume attempts (inside the daemon's 9 s stop bound)."""
"""On shutdown, how long the resume attempts of a resync may still run: under Docker's 10 s."""
NOT_APPLIED = (CommandRefused, ApiChanged, AuthFailed, RateLimited)
"""Errors that mean Octopus answered and did not apply the change."""


class CommandRunner:
    def __init__(
        self,
        agent: AccountAgent,
        poller: Poller,
        reply: ReplyFn,
        *,
        clock: Clock,
        resync_pause: float = RESYNC_PAUSE_SECONDS,
        max_age: float | None = None,
    ) -> None:
        """``max_age``: seconds a command may wait in the queue (behind a resync, say) before
        it is refused as stale rather than run late; None waits for ever."""
        self.agent = agent
        self.poller = poller
        self.reply = reply
        self.clock = clock
        self.resync_pause = resync_pause
        self.max_age = max_age
        self._queue: asyncio.Queue[Command] = asyncio.Queue()

    async def submit(self, command: Command | CommandRejection) -> None:
        if isinstance(command, CommandRejection):
            log.warning("command_rejected", command=command.name, error=command.reason)
            await self.reply(command, "error", command.reason)
            return
        if command.name == "refresh":
            await self._refresh(command)
            return
        self._queue.put_nowait(command)

    async def run(self) -> None:
        while True:
            command = await self._queue.get()
            waited = (self.clock() - command.received_at).total_seconds()
            if self.max_age is not None and waited > self.max_age:
                log.warning("command_stale", command=command.name, waited=round(waited, 1))
                await self.reply(command, "error", STALE_REASON)
                continue
            await self._execute(command)

    def _device_id(self, command: Command) -> str | None:
        if command.device_id:
            return command.device_id
        device = self.agent.primary_device
        return device.id if device else None

    async def _refresh(self, command: Command) -> None:
        answer = self.poller.try_refresh()
        if answer.accepted:
            await self.reply(command, "ok", None)
            return
        await self.reply(
            command,
            "error",
            f"not polled now: {answer.reason}; the refresh will poll at {iso_z(answer.runs_at)}",
        )

    async def _execute(self, command: Command) -> None:
        device_id = self._device_id(command)
        if device_id is None:
            await self.reply(command, "error", "no device is known yet; wait for the first poll")
            return
        client = self.agent.client
        account = self.agent.account
        try:
            match command.name:
                case "target_soc":
                    assert isinstance(command.value, int)
                    await client.set_target_soc(account, device_id, command.value)
                case "ready_by":
                    assert isinstance(command.value, time)
                    await client.set_ready_by(account, device_id, command.value)
                case "smart_control":
                    if command.value:
                        await client.unsuspend(device_id)
                    else:
                        await client.suspend(device_id)
                case "boost":
                    if command.value:
                        await client.boost(device_id)
                    else:
                        await client.cancel_boost(device_id)
                case "resync":
                    await self._resync(device_id)
                case _:
                    await self.reply(command, "error", f"unknown command {command.name!r}")
                    return
        except CommandRefused as exc:
            reasons = f" ({', '.join(exc.reasons)})" if exc.reasons else ""
            log.warning("command_refused", command=command.name, error=str(exc), reasons=reasons)
            await self.reply(command, "error", f"Octopus refused: {exc}{reasons}")
            return
        except KrakenError as exc:
            log.warning("command_failed", command=command.name, error=str(exc))
            await self.reply(command, "error", f"Octopus API error: {exc}")
            return
        log.info("command_ok", command=command.name, device=device_id)
        await self.reply(command, "ok", None)
        await self._reread_state()
        self.poller.schedule_rechecks()

    async def _reread_state(self) -> None:
        try:
            self.agent.take_devices(await self.agent.client.devices(self.agent.account))
        except KrakenError as exc:
            log.warning("state_reread_failed", error=str(exc))
            return
        now: datetime = self.clock()
        await self.agent.publish_device(now)
        await self.agent.publish_tariff(now)

    async def _resync(self, device_id: str) -> None:
        """Suspend, pause, resume, poll: the known fix when no plan appears after plug-in.

        Resuming is guarded: whenever the suspend may have been applied (it succeeded, or it
        failed in a way that does not prove Octopus refused it, or it was cancelled in flight)
        the resume is attempted, and a shutdown does not cut the attempts short.
        """
        maybe_suspended = True
        try:
            try:
                await self.agent.client.suspend(device_id)
            except NOT_APPLIED:
                maybe_suspended = False
                raise
            except KrakenError as exc:
                # A timeout or a 5xx may come after Octopus applied it, or before it applies it
                # late: resume after the pause, so a late suspend cannot land after the resume.
                log.warning("resync_suspend_uncertain", device=device_id, error=str(exc))
                await asyncio.sleep(self.resync_pause)
                raise
            await asyncio.sleep(self.resync_pause)
        finally:
            if maybe_suspended:
                await self._resume_guarded(device_id)
        self.poller.request("resync")

    async def _resume_guarded(self, device_id: str) -> None:
        """Resume, retrying; a cancellation waits (bounded) for the attempts, then goes on."""
        attempts = asyncio.create_task(
            self._resume_with_retries(device_id), name=f"resync-resume:{device_id}"
        )
        current = asyncio.current_task()
        try:
            if current is not None and current.cancelling():
                # Shutting down already (cancelled during the suspend or the pause): the same
                # bounded wait as a cancellation during the attempts.
                raise asyncio.CancelledError
            await asyncio.shield(attempts)
        except asyncio.CancelledError:
            done = await _wait_through_cancellations(attempts, RESUME_SHUTDOWN_GRACE)
            if not done:
                attempts.cancel()
                log.error(
                    "resync_resume_abandoned",
                    device=device_id,
                    action="smart control may be OFF: turn it back on in the Octopus app",
                )
            elif not attempts.cancelled():
                attempts.exception()  # retrieved so asyncio does not warn; the attempts logged it
            raise

    async def _resume_with_retries(self, device_id: str) -> None:
        last_error: KrakenError | None = None
        for attempt in range(1, RESUME_ATTEMPTS + 1):
            try:
                await self.agent.client.unsuspend(device_id)
                return
            except KrakenError as exc:
                last_error = exc
                log.warning("resync_resume_retry", attempt=attempt, error=str(exc))
                if attempt < RESUME_ATTEMPTS:
                    await asyncio.sleep(min(2.0**attempt, 30.0))
        log.error(
            "resync_resume_failed",
            device=device_id,
            error=str(last_error),
            action="smart control may be OFF: turn it back on in the Octopus app",
        )
        assert last_error is not None
        raise last_error


async def _wait_through_cancellations(task: asyncio.Task[None], grace: float) -> bool:
    """Wait up to ``grace`` seconds for ``task``, even through further cancellations.

    A stop cancels the runner more than once (the supervisor re-cancels what is slow to
    stop); each would otherwise cut short the one clean-up that must get its time: turning
    smart control back on. The wait is bounded, so the stop still is.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait({task}, timeout=remaining)
        except asyncio.CancelledError:
            continue
    return True
