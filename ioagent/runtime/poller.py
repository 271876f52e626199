"""When to poll: APScheduler decides the instants, one poller task does the work.

APScheduler jobs only queue a poll request; the polls themselves run one at a time in the
daemon's ``poller`` task, so no API call ever runs outside the supervisor's task group and two
polls of one account never overlap. Every request passes the account's :class:`CallBudget`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

from ioagent.budget import (
    REGULAR_RESERVE,
    CallBudget,
    avoid_boundary,
    backoff_delay,
    is_quiet_second,
    poll_offset_seconds,
)
from ioagent.config import PollingSettings
from ioagent.kraken.errors import AuthFailed, RateLimited
from ioagent.logs import get_logger
from ioagent.runtime.agent import AccountAgent, PollOutcome
from ioagent.timeutil import Clock, iso_z

PollReason = Literal["start", "regular", "active", "recheck", "retry", "refresh", "resync"]

log = get_logger(__name__)


@dataclass(frozen=True)
class RefreshAnswer:
    accepted: bool
    runs_at: datetime
    """When the poll the refresh asked for runs: now, or the poll scheduled for it."""
    reason: str = ""


class Poller:
    def __init__(
        self,
        agent: AccountAgent,
        settings: PollingSettings,
        *,
        clock: Clock,
        on_polled: Callable[[PollOutcome], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
        scheduler_clock: Clock | None = None,
        remember_calls: Callable[[list[datetime]], Awaitable[None]] | None = None,
    ) -> None:
        """``scheduler_clock`` is the clock the scheduler fires by (APScheduler: the wall clock)
        when it differs from ``clock`` (the demo's shifted evening); None means the same."""
        self.agent = agent
        self.settings = settings
        self.clock = clock
        self.scheduler_clock = scheduler_clock
        self.remember_calls = remember_calls
        """Keeps the budget's calls (the daemon: in the store) so a restart cannot reset it."""
        self.on_polled = on_polled
        self.rng = rng or random.Random()
        self.offset = settings.offset_seconds or poll_offset_seconds(agent.account)
        self.budget = CallBudget(settings.planned_per_hour, settings.planned_per_minute)
        self.failures = 0
        self.backoff_until: datetime | None = None
        self.last_poll: datetime | None = None
        self._requests: asyncio.Queue[PollReason] = asyncio.Queue()
        self._scheduler: AsyncIOScheduler | None = None

    # ----- scheduling -----
    def install(self, scheduler: AsyncIOScheduler) -> None:
        self._scheduler = scheduler
        minute, second = divmod(self.offset, 60)
        scheduler.add_job(
            self._enqueue,
            CronTrigger(minute=f"{minute},{minute + 30}", second=second, timezone=UTC),
            args=["regular"],
            id=f"regular:{self.agent.account}",
            coalesce=True,
            misfire_grace_time=self.settings.misfire_grace,
            max_instances=1,
            replace_existing=True,
        )

    def next_regular(self) -> datetime | None:
        if self._scheduler is None:
            return None
        job = self._scheduler.get_job(f"regular:{self.agent.account}")
        return self._from_scheduler(job.next_run_time) if job and job.next_run_time else None

    def _scheduler_offset(self) -> timedelta:
        if self.scheduler_clock is None:
            return timedelta(0)
        return self.scheduler_clock() - self.clock()

    def _to_scheduler(self, at: datetime) -> datetime:
        return at + self._scheduler_offset()

    def _from_scheduler(self, at: datetime) -> datetime:
        return at.astimezone(UTC) - self._scheduler_offset()

    async def _enqueue(self, *reasons: PollReason) -> None:
        for reason in reasons:
            self._requests.put_nowait(reason)

    def request(self, reason: PollReason) -> None:
        self._requests.put_nowait(reason)

    def _job_id(self, key: str) -> str:
        return f"{key}:{self.agent.account}"

    def schedule(
        self, at: datetime, reason: PollReason | Iterable[PollReason], key: str | None = None
    ) -> datetime:
        """Queue a poll for ``at``, moved out of the quiet seconds; returns when it will run."""
        at = avoid_boundary(at)
        reasons = [reason] if isinstance(reason, str) else sorted(set(reason))
        if self._scheduler is None:
            return at
        self._scheduler.add_job(
            self._enqueue,
            DateTrigger(run_date=self._to_scheduler(at), timezone=UTC),
            args=reasons,
            id=self._job_id(key or reasons[0]),
            replace_existing=True,
            misfire_grace_time=self.settings.misfire_grace,
            coalesce=True,
        )
        return at

    def _defer(self, at: datetime, reasons: Iterable[PollReason], key: str) -> datetime:
        """:meth:`schedule` under ``key``, keeping the reasons of a deferral already pending there.

        Each reason carries its own exemptions (a refresh or a retry may use the calls kept for
        the regular polls, a retry runs through a back-off), so none may be lost by merging.
        """
        merged: set[PollReason] = set(reasons)
        if self._scheduler is not None:
            pending = self._scheduler.get_job(self._job_id(key))
            if pending is not None:
                merged.update(pending.args)
        return self.schedule(at, merged, key=key)

    def _withdraw(self, key: str) -> None:
        if self._scheduler is None:
            return
        job_id = self._job_id(key)
        if self._scheduler.get_job(job_id) is not None:
            self._scheduler.remove_job(job_id)

    def schedule_rechecks(self) -> None:
        now = self.clock()
        for index, seconds in enumerate(self.settings.command_rechecks):
            self.schedule(now + timedelta(seconds=seconds), "recheck", key=f"recheck{index}")

    def next_poll_estimate(self) -> datetime | None:
        candidates = [self.next_regular()]
        if self._scheduler is not None:
            for job in self._scheduler.get_jobs():
                if job.id.endswith(self.agent.account) and job.next_run_time is not None:
                    candidates.append(self._from_scheduler(job.next_run_time))
        found = [c for c in candidates if c is not None]
        return min(found) if found else None

    # ----- the refresh command -----
    def try_refresh(self) -> RefreshAnswer:
        """Poll now if allowed; otherwise make sure a poll is scheduled and say when it runs."""
        now = self.clock()
        cost = self._cost()
        backing_off = self._backing_off(now)
        if self.budget.allows(now, cost) and not backing_off:
            self.request("refresh")
            return RefreshAnswer(True, now)
        later = self.budget.next_allowed(now, cost)
        if backing_off and self.backoff_until is not None:
            reason = "backing off after API errors"
            if self.backoff_until >= later:
                # The retry already scheduled at the end of the back-off is that poll.
                return RefreshAnswer(False, avoid_boundary(self.backoff_until), reason)
        else:
            reason = "the API call budget is used up"
        return RefreshAnswer(False, self._defer(later, {"refresh"}, key="budget"), reason)

    def _backing_off(self, now: datetime) -> bool:
        return self.backoff_until is not None and now < self.backoff_until

    # ----- the worker -----
    async def run(self) -> None:
        while True:
            reasons = {await self._requests.get()}
            while not self._requests.empty():
                reasons.add(self._requests.get_nowait())
            await self._poll_for(reasons)

    async def _poll_for(self, reasons: set[PollReason]) -> None:
        now = self.clock()
        if is_quiet_second(now):
            # Never start a call exactly around :00/:30; come back a few seconds later.
            self._defer(now, reasons, key="quiet")
            return
        user_asked = bool(reasons & {"refresh", "resync", "start", "retry"})
        if self._backing_off(now) and "retry" not in reasons and "start" not in reasons:
            log.debug("poll_skipped_backoff", until=iso_z(self.backoff_until or now))
            return
        if not self.agent.devices:
            # The poll sends one planned-dispatch query per smart-chargeable device: know the
            # devices to price it.
            error = await self.agent.list_devices()
            if error is not None:
                await self._finish(PollOutcome(ok=False, error=error))
                return
            now = self.clock()
            if is_quiet_second(now):  # a slow device list can run into the quiet seconds
                self._defer(now, reasons, key="quiet")
                return
        cost = self._cost()
        reserve = 0 if (user_asked or "regular" in reasons) else REGULAR_RESERVE
        if not self.budget.allows(now, cost, reserve=reserve):
            later = self.budget.next_allowed(now, cost, reserve=reserve)
            if "regular" in reasons or user_asked:
                log.info("poll_deferred_budget", until=iso_z(later), reasons=sorted(reasons))
                self._defer(later, {"retry"}, key="budget")
            elif self.agent.is_active(now):
                # Dropping it would end the extra polls of this session until a regular poll.
                log.debug("extra_poll_deferred_budget", until=iso_z(later), reasons=sorted(reasons))
                self.schedule(later, "active")
            else:
                log.debug("extra_poll_skipped_budget", reasons=sorted(reasons))
            return
        self.budget.spend(now, cost)
        self.last_poll = now
        if self.remember_calls is not None:
            # Before the call: a crash during it must not let the next start spend it again.
            await self.remember_calls(self.budget.recent(now))
        await self._finish(await self.agent.poll(may_retry=self._spend_on_retry))

    async def _finish(self, outcome: PollOutcome) -> None:
        self._after(outcome)
        if self.on_polled is not None:
            await self.on_polled(outcome)

    def _cost(self) -> int:
        """Planned-dispatch queries in one poll: one per smart-chargeable device (at least one,
        to be safe). Batteries, heat pumps and retired registrations cost nothing: they are not
        asked for a plan."""
        return max(1, len(self.agent.device_ids))

    def _spend_on_retry(self) -> bool:
        """A retry after a refused token is one more query: only if the budget allows it."""
        now = self.clock()
        cost = self._cost()
        if not self.budget.allows(now, cost):
            return False
        self.budget.spend(now, cost)
        return True

    def _after(self, outcome: PollOutcome) -> None:
        now = self.clock()
        if outcome.ok:
            self.failures = 0
            self.backoff_until = None
            if self.agent.is_active(now):
                self.schedule(now + timedelta(seconds=self.settings.active_interval), "active")
            else:
                self._withdraw("active")
            return
        self.failures += 1
        maximum = self.settings.backoff_max
        if isinstance(outcome.error, AuthFailed):
            delay = maximum
        else:
            delay = backoff_delay(
                self.failures,
                jitter=self.rng.random(),
                initial=self.settings.backoff_initial,
                maximum=maximum,
            )
            if isinstance(outcome.error, RateLimited):
                delay = max(delay, 120.0)
        self.backoff_until = now + timedelta(seconds=delay)
        log.info("poll_backoff", failures=self.failures, retry_at=iso_z(self.backoff_until))
        self.schedule(self.backoff_until, "retry")
