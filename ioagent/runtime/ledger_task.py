"""The ledger's fetch loop for one account: settled billing in, store and payloads out.

Kept apart from the poller on purpose: its own :class:`~ioagent.budget.CallBudget`
(``[ledger] calls_per_hour``, at most 2 a minute), no request in the quiet seconds of
:00/:30, and requests sent one at a time on their own task, so a backfill can never hold a
dispatch poll or a flip back (the poll's budget is not touched, and the event loop is never
blocked: every wait is an ``await``).

The daemon starts :func:`daemon_ledger_task` in its task group when ``[ledger] mpan`` is set
(until the agreements query provides the MPAN), and publishes through a
:class:`SignalRecorder`, which stores every change of ``offpeak`` and ``ev/offpeak``. What is
wrong with the ledger (no MPAN, a failed fetch, labels ioagent does not know) goes to the
``api`` topic's ``ledger`` key through ``notice``; an unknown label is also logged once.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from ioagent.budget import CallBudget, avoid_boundary, backoff_delay
from ioagent.config import LedgerSettings, TariffSettings
from ioagent.kraken.client import KrakenClient, settled_half_hours
from ioagent.ledger.parse import ParsedPage, SettledHalfHour, merge_pages
from ioagent.ledger.reconcile import FIXED_WINDOW, agreement_json, reconcile
from ioagent.ledger.schedule import fetch_range, ledger_budget, next_fetch, next_request_at
from ioagent.ledger.summary import month_json, unknown_label_note, yesterday_json
from ioagent.ledger.windows import LONDON, fetch_chunks
from ioagent.logs import get_logger
from ioagent.mqtt.publisher import Publisher as Publisher_
from ioagent.store.async_store import AsyncStore
from ioagent.store.ledger import (
    CAR_SIGNAL,
    HOME_SIGNAL,
    SaveResult,
    latest_settled,
    record_transition,
    save_settled,
    settled_between,
    transitions_between,
)
from ioagent.timeutil import Clock, iso_z, parse_iso

_log = get_logger(__name__)

AGREEMENT_DAYS = 30
RETRY_INITIAL = 300.0
RETRY_MAX = 4 * 3600.0
"""After a failed fetch: retry in 5 min, doubling up to 4 h (never later than the next one)."""
START_DELAY = 60.0
"""Seconds after start before the daemon's first ledger fetch: the start poll goes first."""
LEDGER_BUDGET_META = "ledger_budget:{account}"
"""The ledger's requests in the last hour (JSON): a restart must not reset its budget."""
MAX_SINGLE_REFETCHES = 12
"""Half-hours that came back without statistics, asked for again one by one, per fetch."""


@dataclass(frozen=True, slots=True)
class LedgerPace:
    """When the first fetch starts (seconds after start) and how many requests a minute the
    ledger may send. Without one the daemon keeps :data:`START_DELAY` and
    :data:`~ioagent.ledger.schedule.LEDGER_PER_MINUTE`, which are for Octopus's shared API;
    ``ioagent demo`` asks its own simulator faster, so the ledger shows within its story."""

    start_delay: float
    per_minute: int


Publish = Callable[[str, str], Awaitable[None]]
"""``(topic suffix under {base}/{acct}/, payload)``."""
Notice = Callable[[str | None], Awaitable[None]]
"""The ledger's note for the ``api`` topic changed (None: all is well)."""
NO_MPAN_NOTE = (
    "waiting: no import MPAN known yet (it is read from the account's electricity agreement;"
    " or set [ledger] mpan)"
)
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class FetchReport:
    requests: int = 0
    added: int = 0
    unchanged: int = 0
    rebilled: int = 0
    unknown_labels: list[str] = field(default_factory=list)
    without_statistics: int = 0
    skipped: str | None = None


class LedgerTask:
    def __init__(
        self,
        client: KrakenClient,
        store: AsyncStore,
        account: str,
        mpan: Callable[[], Awaitable[str | None]],
        settings: LedgerSettings,
        *,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
        publish: Publish | None = None,
        notice: Notice | None = None,
        budget: CallBudget | None = None,
        window: tuple[time, time] = FIXED_WINDOW,
        zone: ZoneInfo = LONDON,
    ) -> None:
        self.client = client
        self.store = store
        self.account = account
        self.mpan = mpan
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.publish = publish
        self.notice = notice
        self.budget = budget or ledger_budget(settings.calls_per_hour)
        self.window = window
        """The product's fixed low-rate window and its zone (``[tariff]``), as ``ioagent ledger``
        reads them: the reasons on MQTT and on the command line must be the same."""
        self.zone = zone
        self.request_times: list[datetime] = []
        self._labels_reported: set[str] = set()
        self.note: str | None = None
        """What the ``api`` topic says of the ledger now (None: ``ok``)."""

    async def _gate(self) -> None:
        """Wait until the ledger's budget and the quiet seconds allow one request."""
        while True:
            now = self.clock()
            at = next_request_at(now, self.budget)
            if at <= now:
                self.budget.spend(now)
                self.request_times.append(now)
                spent = json.dumps([iso_z(c) for c in self.budget.recent(now)])
                key = LEDGER_BUDGET_META.format(account=self.account)
                await self.store.set_meta(key, spent)
                return
            await self.sleep((at - now).total_seconds())

    async def fetch_once(self) -> FetchReport:
        report = FetchReport()
        mpan = await self.mpan()
        if not mpan:
            report.skipped = "no import MPAN known yet"
            await self._set_note(NO_MPAN_NOTE)
            return report
        now = self.clock()
        latest = await self.store._run(lambda s: latest_settled(s, self.account), None)
        start, end = fetch_range(
            now,
            latest,
            backfill_days=self.settings.backfill_days,
            refetch_days=self.settings.refetch_days,
        )
        before = len(self.request_times)
        chunks = fetch_chunks(start, end)
        rows: list[SettledHalfHour] = []
        for index, (chunk_start, chunk_end) in enumerate(chunks):
            # Stored and shown chunk by chunk: a long backfill is not lost when it is cut short,
            # and the month and the agreement fill in while it runs.
            await self._fetch_chunk(mpan, chunk_start, chunk_end, report)
            last = index == len(chunks) - 1
            rows = await self._publish(with_yesterday=last)
        report.requests = len(self.request_times) - before
        if not chunks:
            rows = await self._publish()
        await self._set_note(unknown_label_note(rows))
        return report

    async def _fetch_chunk(
        self, mpan: str, start: datetime, end: datetime, report: FetchReport
    ) -> None:
        page = await settled_half_hours(
            self.client, self.account, mpan, start, end, before_request=self._gate
        )
        page = await self._refetch_stripped(page, mpan)
        report.without_statistics += len(page.without_statistics)
        saved: SaveResult = await self.store._run(
            lambda s: save_settled(s, self.account, page.half_hours, self.clock()),
            SaveResult(0, 0, []),
        )
        report.added += saved.added
        report.unchanged += saved.unchanged
        report.rebilled += len(saved.rebilled)
        for rebill in saved.rebilled:
            _log.info("settled half-hour re-billed", account=self.account, **rebill.as_log())
        report.unknown_labels += [
            label for label in page.unknown_labels if label not in report.unknown_labels
        ]
        self._log_labels(page.unknown_labels)

    async def _refetch_stripped(self, page: ParsedPage, mpan: str) -> ParsedPage:
        pages = [page]
        for start in page.without_statistics[:MAX_SINGLE_REFETCHES]:
            pages.append(
                await settled_half_hours(
                    self.client,
                    self.account,
                    mpan,
                    start,
                    start + timedelta(minutes=30),
                    before_request=self._gate,
                )
            )
        return merge_pages(pages)

    def _log_labels(self, labels: list[str]) -> None:
        new = [label for label in labels if label not in self._labels_reported]
        if not new:
            return
        self._labels_reported.update(new)
        # Logged once per label, with the label: a new vocabulary must be seen, never guessed.
        _log.warning("unknown settled-billing label", account=self.account, labels=new)

    async def _set_note(self, note: str | None) -> None:
        if note == self.note:
            return
        self.note = note
        if self.notice is None:
            return
        try:
            await self.notice(note)
        except Exception as exc:  # a note that cannot be shown must not stop the ledger
            _log.warning("ledger note not published", account=self.account, error=str(exc))

    def payloads(
        self,
        rows: list[SettledHalfHour],
        home: list[tuple[datetime, bool]],
        car: list[tuple[datetime, bool]],
        now: datetime,
    ) -> dict[str, str]:
        """The three retained payloads (days of the product's wall clock, ``[tariff] zone``)."""
        checked = reconcile(rows, home, car, window=self.window, zone=self.zone)
        agreement = agreement_json(checked, AGREEMENT_DAYS)
        yesterday = yesterday_json(rows, now, self.zone)
        return {
            "ledger/yesterday": json.dumps(yesterday, separators=(",", ":")),
            "ledger/month": json.dumps(month_json(rows, now, self.zone), separators=(",", ":")),
            "ledger/agreement": json.dumps(agreement, separators=(",", ":")),
        }

    async def _publish(self, *, with_yesterday: bool = True) -> list[SettledHalfHour]:
        """Publish the payloads from the store; returns the rows they were made from.

        ``with_yesterday`` false while a fetch is still under way: a backfill goes oldest
        first, and its newest complete day so far is not the last settled day.
        """
        now = self.clock()
        since = now - timedelta(days=max(AGREEMENT_DAYS, 32))
        no_rows: list[SettledHalfHour] = []
        no_signal: list[tuple[datetime, bool]] = []
        rows = await self.store._run(
            lambda s: settled_between(s, self.account, since, now), no_rows
        )
        home = await self.store._run(
            lambda s: transitions_between(s, self.account, HOME_SIGNAL, since, now), no_signal
        )
        car = await self.store._run(
            lambda s: transitions_between(s, self.account, CAR_SIGNAL, since, now), no_signal
        )
        if self.publish is not None:
            for suffix, payload in self.payloads(rows, home, car, now).items():
                if suffix == "ledger/yesterday" and not with_yesterday:
                    continue
                if payload != "null":  # no fully settled day yet: nothing to say
                    await self.publish(suffix, payload)
        return rows

    async def restore(self) -> None:
        """Take back the requests an earlier run made this hour: a restart (or a crash loop)
        must not give the ledger a fresh budget."""
        try:
            key = LEDGER_BUDGET_META.format(account=self.account)
            spent = json.loads(await self.store.get_meta(key) or "[]")
            self.budget.restore((parse_iso(str(at)) for at in spent), self.clock())
        except (TypeError, ValueError):
            _log.warning("stored ledger budget unreadable", account=self.account)

    async def run(self, stop: asyncio.Event, first_delay: float = 0.0) -> None:
        """Fetch after ``first_delay`` s, then ``fetches_per_day`` times a day, until ``stop``.

        What an earlier run stored is published at once, without a request: a broker that lost
        its retained messages (or a new one) must not wait for the next fetch.
        """
        await self.restore()
        try:
            latest = await self.store._run(lambda s: latest_settled(s, self.account), None)
            if latest is not None:
                await self._publish()
        except Exception as exc:  # the ledger must never take the daemon down
            _log.warning("stored ledger not published", account=self.account, error=str(exc))
        if first_delay > 0:
            await self.sleep(first_delay)
        failures = 0
        while not stop.is_set():
            waiting = False
            try:
                report = await self.fetch_once()
                _log.info("ledger fetched", account=self.account, **report.__dict__)
                failures = 0
                waiting = report.skipped is not None
            except Exception as exc:  # the ledger must never take the daemon down
                failures += 1
                _log.warning(
                    "ledger fetch failed", account=self.account, error=str(exc), failures=failures
                )
                await self._set_note(
                    f"degraded: settled billing unreadable ({exc}); the stored ledger is kept"
                )
            now = self.clock()
            at = next_fetch(now, self.account, self.settings.fetches_per_day)
            if failures:
                # Try again sooner than the next scheduled fetch, backing off with jitter.
                delay = backoff_delay(
                    failures, jitter=random.random(), initial=RETRY_INITIAL, maximum=RETRY_MAX
                )
                at = min(at, avoid_boundary(now + timedelta(seconds=delay)))
            elif waiting:
                # No MPAN yet (the agreements not read so far): look again soon, not hours later.
                at = min(at, avoid_boundary(now + timedelta(seconds=RETRY_INITIAL)))
            await self.sleep((at - now).total_seconds())


# --- wiring helpers for the daemon --------------------------------------------------------------

SIGNAL_TOPICS = {"offpeak": HOME_SIGNAL, "ev/offpeak": CAR_SIGNAL}
"""Topic suffix under ``{base}/{acct}/`` → the signal name the ledger stores."""
SIGNAL_PAYLOADS = {"true": True, "false": False}


class SignalRecorder:
    """A :class:`~ioagent.mqtt.publisher.Publisher` in front of the bridge that stores every
    change of the published home and car off-peak signals, so the bill can be held against
    what ioagent said at the time. Everything is passed on unchanged."""

    def __init__(
        self, inner: Publisher_, store: AsyncStore, account: str, root: str, clock: Clock
    ) -> None:
        self.inner = inner
        self.store = store
        self.account = account
        self.clock = clock
        self._signals = {f"{root}/{suffix}": name for suffix, name in SIGNAL_TOPICS.items()}

    async def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        await self.inner.publish(topic, payload, retain=retain)
        signal = self._signals.get(topic)
        value = SIGNAL_PAYLOADS.get(payload)
        if signal is not None and value is not None:
            at = self.clock()
            await self.store._run(
                lambda s: record_transition(s, self.account, signal, at, value), False
            )


def daemon_ledger_task(
    client: KrakenClient,
    store: AsyncStore,
    account: str,
    root: str,
    settings: LedgerSettings,
    publisher: Publisher_,
    clock: Clock,
    account_mpan: Callable[[], str | None] | None = None,
    notice: Notice | None = None,
    on_published: Callable[[str], Awaitable[None]] | None = None,
    tariff: TariffSettings | None = None,
    pace: LedgerPace | None = None,
) -> LedgerTask | None:
    """The daemon's ledger task, or None when it has no way to learn the import MPAN.

    ``[ledger] mpan`` wins; otherwise ``account_mpan`` gives the MPAN of the agreement in force
    (read by the product task), asked afresh before each fetch. ``on_published`` is told the
    name (``yesterday``, ``month``, ``agreement``) of each topic published.
    """
    if not settings.enabled or (not settings.mpan and account_mpan is None):
        return None
    configured = settings.mpan

    async def the_mpan() -> str | None:
        if configured:
            return configured
        return account_mpan() if account_mpan is not None else None

    async def publish(suffix: str, payload: str) -> None:
        await publisher.publish(f"{root}/{suffix}", payload, retain=True)
        if on_published is not None:
            await on_published(suffix.removeprefix("ledger/"))

    window = (tariff.start_time, tariff.end_time) if tariff is not None else FIXED_WINDOW
    budget = None
    if pace is not None:
        budget = CallBudget(per_hour=settings.calls_per_hour, per_minute=pace.per_minute)
    return LedgerTask(
        client,
        store,
        account,
        the_mpan,
        settings,
        clock=clock,
        publish=publish,
        notice=notice,
        budget=budget,
        window=window,
        zone=tariff.zone if tariff is not None else LONDON,
    )
