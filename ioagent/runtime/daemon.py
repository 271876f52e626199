"""The supervisor: one ``asyncio.TaskGroup`` with a named task per job, and a clean shutdown.

Tasks: ``mqtt`` (bridge connection), ``poller`` (API polls), ``commands`` (command queue),
``boundaries`` (flips state topics at each transition), ``token-refresh``, ``heartbeat``,
``homeassistant`` (discovery re-announce), ``victron`` (optional) and ``shutdown`` (waits for
SIGTERM/SIGINT, publishes ``offline`` and ends the group).

A stop (``request_stop``, SIGTERM, SIGINT) always completes within :data:`STOP_BOUND` seconds,
whatever the daemon is doing: the work tasks are cancelled (a resync still gets its bounded
resume), the bridge says ``offline`` concurrently, and the store gets what is left. A task that
does not finish cancelling is cancelled again and, past the bound, named in the log with its
stack and left behind (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from ioagent import __version__
from ioagent.aio import cancel_and_wait, describe_tasks, wait_event
from ioagent.budget import avoid_boundary, backoff_delay, is_quiet_second
from ioagent.config import ConfigError, Settings, ignored_environment, load_settings
from ioagent.kraken.client import KrakenClient
from ioagent.kraken.errors import KrakenError
from ioagent.kraken.rest import ProductsClient
from ioagent.kraken.tokens import BACKGROUND_RETRY
from ioagent.kraken.types import SMART, Dispatch
from ioagent.logs import configure_logging, get_logger, register_secret
from ioagent.mqtt.bridge import IncomingMessage, MqttBridge
from ioagent.mqtt.commands import Command, CommandRejection, parse_command
from ioagent.mqtt.homeassistant import (
    component_removal,
    discovery_messages,
    discovery_topic,
    ha_status_topic,
)
from ioagent.mqtt.topics import LEDGER_TOPICS, Topics, setup_api_topic, setup_status_topic
from ioagent.runtime import ledger_task
from ioagent.runtime.agent import AccountAgent, PollOutcome
from ioagent.runtime.command_runner import CommandRunner
from ioagent.runtime.discovery import DiscoveryStopped, discover_account
from ioagent.runtime.ledger_task import SignalRecorder, daemon_ledger_task
from ioagent.runtime.poller import Poller
from ioagent.store.async_store import AsyncStore
from ioagent.tariff.evidence import confirmed
from ioagent.tariff.signals import home_windows, timeline, victron_confidences
from ioagent.tariff.windows import Window
from ioagent.timeutil import Clock, iso_z, parse_iso, utc_now
from ioagent.victron.connector import VictronConnector

log = get_logger(__name__)

STOP_BOUND = 9.0
"""Seconds from a stop request to :meth:`Daemon.run` returning, under Docker's 10 s."""
WORK_STOP_GRACE = 4.5
"""The work tasks get one cancellation for this long (a resync's resume needs up to 4 s)..."""
WORK_STOP_BOUND = 6.0
"""...and are cancelled again and again until this bound."""
BRIDGE_STOP_BOUND = 3.0
"""The bridge's ``offline`` and disconnect, at the same time as the work tasks stop."""
STORE_CLOSE_BOUND = 2.0
"""What is left for the store's queued writes before the daemon returns without them."""
EXIT_STOP_OVERDUE = 70
"""Exit code of ``ioagent run`` when a task outlived the stop bound (its stack is logged)."""
BOUNDARY_MAX_WAIT = 60.0
"""Re-evaluate at least this often, so a wall-clock jump or a suspend is caught quickly."""
HEARTBEAT_INTERVAL = 15.0
HA_BIRTH_DELAY = (1.0, 5.0)
HA_TOPICS_META = "homeassistant_topics"
LEDGER_TOPICS_META = "ledger_topics_published"
"""The ledger topics published so far (JSON list): each has its HA entity, also after a restart."""
PRUNE_FIRST_DELAY = 120.0
PRUNE_INTERVAL = 24 * 3600.0
VICTRON_HORIZON = timedelta(hours=24)
VICTRON_MARGIN = timedelta(hours=24)
"""How far before now and past the horizon the Victron windows are read, so that each keeps its
true start and end (a window longer than this would be cut, and move with the clock)."""
CHARGE_CHECK_DELAY = timedelta(seconds=60)
"""A slot's first device-state check: within 2 minutes of its start (the car needs a moment)."""
CHARGE_RECHECK = timedelta(minutes=10)


def charge_check_due(
    plan: Sequence[Dispatch], evidence: Sequence[Window], checked: set[datetime], now: datetime
) -> datetime | None:
    """The next device-state check: for each SMART slot not yet confirmed, at its start plus
    :data:`CHARGE_CHECK_DELAY`, then every :data:`CHARGE_RECHECK` until it ends."""
    candidates = []
    for slot in plan:
        if slot.type != SMART or slot.end <= now or confirmed(slot, evidence):
            continue
        at = slot.start + CHARGE_CHECK_DELAY
        while at < slot.end and (at in checked or at + CHARGE_RECHECK <= now):
            at += CHARGE_RECHECK
        if at < slot.end and at not in checked:
            candidates.append(at)
    return min(candidates, default=None)


class TokenRefresher(Protocol):
    """What the token-refresh task needs of :class:`KrakenClient`."""

    def token_refresh_due_at(self) -> datetime | None: ...

    async def refresh_token_if_due(self) -> bool: ...


class _Stop(Exception):
    """Raised inside the task group to end it after a clean shutdown."""


def budget_meta_key(account: str) -> str:
    return f"budget_calls:{account}"


def heartbeat_path(settings: Settings) -> Path:
    return settings.storage.path.parent / "heartbeat"


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = utc_now,
        ledger_pace: ledger_task.LedgerPace | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.ledger_pace = ledger_pace
        self.stop_requested = asyncio.Event()
        self.plan_changed = asyncio.Event()
        self.plan_changed_for_checks = asyncio.Event()
        self.ha_birth = asyncio.Event()
        self.rng = random.Random()
        self.stop_overdue = False
        """Set when a stop outlived :data:`STOP_BOUND`: some task is still running."""
        self._announced_family: bool | None = None
        """Whether the last discovery announced had the allowance entity (a migration changes it)."""
        self._ledger_published: set[str] = set()
        """The ledger topics published (by this run or one before): HA gets an entity for each."""
        register_secret(settings.octopus.api_key.get_secret_value())
        if settings.mqtt.password is not None:
            register_secret(settings.mqtt.password.get_secret_value())
        if settings.victron.password is not None:
            register_secret(settings.victron.password.get_secret_value())

    def request_stop(self) -> None:
        self.stop_requested.set()

    async def run(self) -> None:
        """Run until a stop is requested; return within :data:`STOP_BOUND` seconds of it.

        A cancellation of this coroutine is a stop request too, with the same bound.
        """
        main = asyncio.create_task(self._run(), name="daemon")
        stop = asyncio.create_task(self.stop_requested.wait(), name="daemon-stop-request")
        try:
            await asyncio.wait({main, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not main.done():
                await self._finish_within_bound(main)
            if main.done():
                main.result()
        except asyncio.CancelledError:
            self.request_stop()
            await self._finish_within_bound(main)
            raise
        finally:
            stop.cancel()

    async def _finish_within_bound(self, main: asyncio.Task[None]) -> None:
        done, _ = await asyncio.wait({main}, timeout=STOP_BOUND)
        if done:
            return
        self.stop_overdue = True
        log.error(
            "stop_overdue",
            bound_s=STOP_BOUND,
            hint="a task did not stop in time; please report this log",
            stacks=describe_tasks(asyncio.all_tasks() - {asyncio.current_task()}),
        )
        main.cancel()

    async def _run(self) -> None:
        settings = self.settings
        store = await AsyncStore.open(settings.storage.path)
        try:
            async with KrakenClient(
                settings.octopus.api_url,
                settings.octopus.api_key,
                connect_timeout=settings.octopus.connect_timeout,
                read_timeout=settings.octopus.read_timeout,
                clock=self.clock,
            ) as client:
                try:
                    account = await discover_account(
                        settings, client, store, self.stop_requested, self.clock
                    )
                except DiscoveryStopped:
                    return
                await self._run_account(client, store, account)
        finally:
            await store.close(STORE_CLOSE_BOUND)

    async def _run_account(self, client: KrakenClient, store: AsyncStore, account: str) -> None:
        settings = self.settings
        topics = Topics(settings.mqtt.base_topic, account)
        ha = settings.homeassistant
        subscriptions: list[str] = []
        if not settings.mqtt.read_only:
            subscriptions += [topics.command_filter, topics.refresh]
        if ha.enabled:
            subscriptions.append(ha_status_topic(ha.prefix))

        bridge = MqttBridge(
            settings.mqtt,
            client_id=settings.mqtt.client_id or f"ioagent-{account}",
            status_topic=topics.status,
            subscriptions=subscriptions,
            on_message=self._on_message,
            on_connect=self._on_connect,
            clock=self.clock,
        )
        # The ledger holds the bill against what was published: record the signals' changes.
        signals = SignalRecorder(bridge, store, account, topics.root, self.clock)
        agent = AccountAgent(
            account=account,
            client=client,
            publisher=signals if settings.ledger.enabled else bridge,
            store=store,
            topics=topics,
            tariff=settings.tariff,
            clock=self.clock,
        )
        agent.rates_client = ProductsClient(
            settings.octopus.rest_url,
            connect_timeout=settings.octopus.connect_timeout,
            read_timeout=settings.octopus.read_timeout,
        )
        poller = Poller(
            agent,
            settings.polling,
            clock=self.clock,
            on_polled=self._after_poll,
            scheduler_clock=utc_now,  # APScheduler fires by the wall clock
            remember_calls=lambda calls: store.set_meta(
                budget_meta_key(account), json.dumps([iso_z(c) for c in calls])
            ),
        )
        # A restart (an update, a crash loop) must not give the account a fresh budget.
        try:
            spent = json.loads(await store.get_meta(budget_meta_key(account)) or "[]")
            poller.budget.restore((parse_iso(str(at)) for at in spent), self.clock())
        except (TypeError, ValueError):
            log.warning("stored_call_budget_unreadable", hint="starting with a fresh budget")
        runner = CommandRunner(
            agent,
            poller,
            self._reply,
            clock=self.clock,
            resync_pause=settings.polling.resync_pause,
            max_age=settings.mqtt.command_max_age,
        )
        self.bridge, self.agent, self.poller, self.runner, self.store = (
            bridge,
            agent,
            poller,
            runner,
            store,
        )
        self.topics = topics
        self.victron = (
            VictronConnector(
                settings.victron, publish_status=self._publish_victron, clock=self.clock
            )
            if settings.victron.enabled
            else None
        )

        # Whatever an earlier discovery (this run's or one before) left there is over now.
        await bridge.clear_retained(setup_status_topic(settings.mqtt.base_topic))
        await bridge.clear_retained(setup_api_topic(settings.mqtt.base_topic))
        restored = await agent.restore()
        if settings.ledger.enabled:
            self._ledger_published = await self._stored_ledger_topics()
        await self._remove_stale_discovery()
        log.info(
            "starting",
            version=__version__,
            account=account,
            broker=f"{settings.mqtt.host}:{settings.mqtt.port}",
            restored_topics=restored,
            poll_offset_seconds=poller.offset,
            read_only=settings.mqtt.read_only,
        )
        scheduler = AsyncIOScheduler(timezone=UTC)
        poller.install(scheduler)
        scheduler.start()
        poller.request("start")
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(bridge.run(), name="mqtt")
                work = [
                    group.create_task(poller.run(), name="poller"),
                    group.create_task(runner.run(), name="commands"),
                    group.create_task(self._boundaries(), name="boundaries"),
                    group.create_task(self._token_refresh(client), name="token-refresh"),
                    group.create_task(self._heartbeat(), name="heartbeat"),
                    group.create_task(self._prune_history(), name="prune"),
                    group.create_task(self._charge_checks(), name="charge-checks"),
                    group.create_task(self._products(), name="products"),
                ]
                if ha.enabled:
                    work.append(group.create_task(self._homeassistant(), name="homeassistant"))
                if self.victron is not None:
                    work.append(group.create_task(self.victron.run(), name="victron"))
                ledger = daemon_ledger_task(
                    client,
                    store,
                    account,
                    topics.root,
                    settings.ledger,
                    bridge,
                    self.clock,
                    account_mpan=self._account_mpan,
                    notice=self.agent.set_ledger_note,
                    on_published=self._ledger_topic_published,
                    tariff=settings.tariff,
                    pace=self.ledger_pace,
                )
                if ledger is not None:
                    pace = self.ledger_pace
                    delay = ledger_task.START_DELAY if pace is None else pace.start_delay
                    work.append(
                        group.create_task(
                            ledger.run(self.stop_requested, delay),
                            name="ledger",
                        )
                    )
                group.create_task(self._shutdown_on_request(work), name="shutdown")
        except* _Stop:
            log.info("stopped", account=account)
        finally:
            scheduler.shutdown(wait=False)
            await agent.rates_client.close()

    # ----- tasks -----
    async def _shutdown_on_request(self, work: list[asyncio.Task[None]]) -> None:
        """On a stop request: stop the work and say ``offline`` at once, each within a bound.

        The group's own cancellation would send each task one cancellation and then wait for
        it without a bound; a task that lost it (Python 3.11's ``wait_for`` can) kept the
        daemon from ever stopping. Here every task is cancelled again until it ends.
        """
        await self.stop_requested.wait()
        log.info("shutting_down")
        stuck, _ = await asyncio.gather(
            cancel_and_wait(work, grace=WORK_STOP_GRACE, bound=WORK_STOP_BOUND),
            self.bridge.shutdown(BRIDGE_STOP_BOUND),
        )
        if stuck:
            log.error(
                "tasks_did_not_stop",
                tasks=sorted(task.get_name() for task in stuck),
                stacks=describe_tasks(stuck),
            )
        raise _Stop

    async def _boundaries(self) -> None:
        """Publish the tariff state now, then again at each transition, re-armed on plan change."""
        last_windows: list[tuple[datetime, datetime]] | None = None
        while True:
            self.plan_changed.clear()
            now = self.clock()
            if self.agent.have_plan:
                await self.agent.publish_plan(now)  # drops slots that just ended
            state = await self.agent.publish_tariff(now)
            if (
                self.settings.homeassistant.enabled
                and self._has_allowance() != self._announced_family
            ):
                await self._publish_discovery()  # a migration: the allowance entity comes or goes
            if self.victron is not None:
                windows = self._victron_windows(now)
                if windows != last_windows:
                    last_windows = windows
                    await self.victron.update_windows(windows, now)
            wait = BOUNDARY_MAX_WAIT
            # An announced change of product changes the rules at its instant.
            change = self.agent.next_product_change(now)
            for instant in (state.next_transition, change):
                if instant is not None:
                    wait = min(wait, max(0.0, (instant - self.clock()).total_seconds()))
            await wait_event(self.plan_changed, wait)

    async def _products(self) -> None:
        """Read the account's product (agreements) and the tariff's rates once a day.

        A task of its own, so these calls never delay a dispatch poll or a flip. Each has its
        own small budget and skips the quiet seconds (``AccountAgent._due``).
        """
        while True:
            now = self.clock()
            due = avoid_boundary(self.agent.next_product_work(now))
            wait = (due - now).total_seconds()
            if wait > 0:
                await asyncio.sleep(min(wait, BOUNDARY_MAX_WAIT))
                continue
            changed = await self.agent.refresh_product_if_due(self.clock())
            await self.agent.refresh_rates_if_due(self.clock())
            if changed:
                self.plan_changed.set()
            await asyncio.sleep(5.0)  # a budget refusal must not spin

    async def _charge_checks(self) -> None:
        """Read the device state shortly after each smart slot starts, to confirm charging.

        A four-rate home bonus needs the car to charge (docs/tariff.md, R6). Polls already
        report the state; this adds a devices query (not a planned-dispatch query, with its own
        small budget) at :data:`CHARGE_CHECK_DELAY` after a slot starts, then every
        :data:`CHARGE_RECHECK` while the slot runs and no charging has been seen.
        """
        checked: set[datetime] = set()
        while True:
            now = self.clock()
            due = charge_check_due(self.agent.plan, self.agent.evidence(), checked, now)
            if due is None:
                await wait_event(self.plan_changed_for_checks, 60.0)
                self.plan_changed_for_checks.clear()
                continue
            wait = (avoid_boundary(due) - now).total_seconds()
            if wait > 0:
                await wait_event(self.plan_changed_for_checks, wait)
                self.plan_changed_for_checks.clear()
                continue
            checked.add(due)
            checked = {at for at in checked if at > now - timedelta(hours=26)}
            if await self.agent.check_device_state(self.clock()):
                self.plan_changed.set()

    def _victron_windows(self, now: datetime) -> list[tuple[datetime, datetime]]:
        """The home signal's off-peak stretches, as sure as ``[victron] offpeak_confidence``."""
        rules = self.agent.rules()
        end = now + VICTRON_HORIZON
        # Whole windows, not cut at now or at the horizon: the connector writes a running one
        # from the current minute and keeps the slot that holds it, and takes every window that
        # starts within the horizon. A window cut at the clock would be another window a minute
        # later, rewritten on the GX (which keeps its settings in flash) every minute.
        segments = timeline(
            rules,
            self.agent.plan,
            self.agent.evidence(),
            now,
            now - VICTRON_MARGIN,
            end + VICTRON_MARGIN,
        )
        confidences = victron_confidences(
            self.settings.victron.offpeak_confidence,
            rules.family,
            include_fixed_window=self.settings.victron.include_fixed_window,
        )
        return [
            (w.start, w.end)
            for w in home_windows(segments, confidences)
            if w.end > now and w.start < end
        ]

    async def _token_refresh(self, client: TokenRefresher) -> None:
        """Refresh the JWT ahead of expiry so that a poll never waits for a login.

        A failed refresh is retried with exponential backoff and jitter, not every second for
        as long as Octopus is down, and no attempt starts in the quiet seconds of :00 and :30.
        """
        failures = 0
        retry_at: datetime | None = None
        while True:
            now = self.clock()
            due = client.token_refresh_due_at()
            # Before the first login there is no due time; a minute on, the refresh logs in.
            at = due if due is not None else now + timedelta(seconds=60)
            if retry_at is not None:
                at = max(at, retry_at)
            at = avoid_boundary(max(at, now))
            wait = (at - now).total_seconds()
            if wait > 300.0:
                # Look again in a while: a poll may renew the token first and move the due time.
                await asyncio.sleep(300.0)
                continue
            await asyncio.sleep(wait)
            if is_quiet_second(self.clock()):
                continue  # woke late, into the quiet seconds
            try:
                await client.refresh_token_if_due()
            except KrakenError as exc:
                failures += 1
                delay = backoff_delay(
                    failures,
                    jitter=self.rng.random(),
                    initial=BACKGROUND_RETRY.total_seconds(),
                    maximum=self.settings.polling.backoff_max,
                )
                retry_at = self.clock() + timedelta(seconds=delay)
                log.warning(
                    "token_refresh_failed",
                    error=str(exc),
                    failures=failures,
                    retry_at=iso_z(retry_at),
                )
            else:
                failures = 0
                # A token that lives no longer than the refresh margin is due again at once; a
                # pause keeps that from turning into a loop of logins.
                retry_at = self.clock() + BACKGROUND_RETRY

    async def _heartbeat(self) -> None:
        path = heartbeat_path(self.settings)
        while True:
            stamp = iso_z(self.clock())
            try:
                await asyncio.to_thread(_write_heartbeat, path, stamp)
            except OSError as exc:
                log.warning("heartbeat_write_failed", path=str(path), error=exc.strerror)
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def _prune_history(self) -> None:
        """Once a day drop history older than ``[storage] history_days`` (on the store's thread)."""
        await asyncio.sleep(PRUNE_FIRST_DELAY)
        while True:
            removed = await self.store.prune(self.clock(), self.settings.storage.history_days)
            if removed:
                log.info("history_pruned", rows=removed)
            await asyncio.sleep(PRUNE_INTERVAL)

    async def _homeassistant(self) -> None:
        while True:
            await self.ha_birth.wait()
            self.ha_birth.clear()
            # HA asks every bridge at once after it restarts; a random delay spreads the load.
            await asyncio.sleep(self.rng.uniform(*HA_BIRTH_DELAY))
            await self._publish_discovery()
            await self.agent.publish_all(force=True)

    # ----- callbacks -----
    async def _on_connect(self) -> None:
        if self.settings.homeassistant.enabled:
            await self._publish_discovery()

    async def _stored_ledger_topics(self) -> set[str]:
        try:
            names = json.loads(await self.store.get_meta(LEDGER_TOPICS_META) or "[]")
        except ValueError:
            return set()
        return {str(n) for n in names if n in LEDGER_TOPICS} if isinstance(names, list) else set()

    async def _ledger_topic_published(self, name: str) -> None:
        """A ledger topic has a payload: from now on HA gets its entity (announced after the
        payload, so HA's first read of the topic finds it)."""
        if name in self._ledger_published:
            return
        self._ledger_published.add(name)
        await self.store.set_meta(LEDGER_TOPICS_META, json.dumps(sorted(self._ledger_published)))
        if self.settings.homeassistant.enabled:
            await self._publish_discovery()

    def _account_mpan(self) -> str | None:
        """The import MPAN of the agreement in force, once the agreements have been read."""
        product = self.agent.known_product
        return product.mpan if product is not None else None

    def _has_allowance(self) -> bool:
        """The allowance topics are published: a four-rate product that the account (or the
        config) names, not the cautious default used while the product is unknown."""
        product = self.agent.product
        return product.family == "four_rate" and product.source != "default"

    async def _announced_discovery(self) -> dict[str, str]:
        """Discovery topic -> the payload last published there (kept across restarts)."""
        stored = json.loads(await self.store.get_meta(HA_TOPICS_META) or "{}")
        if not isinstance(stored, dict):  # 0.1.0 development builds kept a list of topics
            return {}
        return {str(topic): str(payload) for topic, payload in stored.items()}

    async def _publish_discovery(self) -> None:
        ha = self.settings.homeassistant
        if not ha.enabled:
            return
        previous = await self._announced_discovery()
        current = discovery_messages(
            self.topics,
            account=self.agent.account,
            devices=self.agent.smart_devices,  # a battery or a retired EV gets no car controls
            settings=ha,
            sw_version=__version__,
            read_only=self.settings.mqtt.read_only,
            allowance=self._has_allowance(),
            ledger=self._ledger_published,
        )
        self._announced_family = self._has_allowance()
        if not self.agent.devices_listed and previous and set(previous) == set(current):
            # Devices are unknown until the first poll: re-announce what HA already has rather
            # than a payload without the car, which would make HA drop its entities. (A new
            # prefix is a new topic set: that one is announced afresh.)
            messages = previous
        else:
            # Entities that went away (a car removed from the account) are sent as
            # platform-only stubs, HA's way to delete one entity of a device.
            messages = component_removal(previous, current)
        for topic, payload in messages.items():
            await self.bridge.publish(topic, payload, retain=True)
        await self.store.set_meta(
            HA_TOPICS_META, json.dumps({t: p for t, p in messages.items() if p}, sort_keys=True)
        )

    async def _remove_stale_discovery(self) -> None:
        """Discovery turned off: clear what an earlier run announced, so HA drops the device.

        The current account's topic is cleared even when nothing was stored (a new or lost
        database), because the broker may still hold it from an earlier run.
        """
        ha = self.settings.homeassistant
        if ha.enabled:
            return
        topics = set(await self._announced_discovery())
        topics.add(discovery_topic(ha.prefix, self.agent.account))
        for topic in sorted(topics):
            await self.bridge.publish(topic, "", retain=True)
        log.info("homeassistant_discovery_removed", topics=len(topics))
        await self.store.set_meta(HA_TOPICS_META, "{}")

    async def _after_poll(self, outcome: PollOutcome) -> None:
        self.plan_changed.set()
        self.plan_changed_for_checks.set()
        if self.settings.homeassistant.enabled and outcome.devices_changed:
            await self._publish_discovery()

    async def _publish_victron(self, status: dict[str, object]) -> None:
        await self.bridge.publish(
            self.topics.victron, json.dumps(status, sort_keys=True), retain=True
        )

    async def _reply(
        self, command: Command | CommandRejection, status: str, error: str | None
    ) -> None:
        payload = command.reply_json("ok" if status == "ok" else "error", error)
        await self.bridge.reply(
            self.topics.response,
            payload,
            response_topic=command.response_topic,
            correlation_data=command.correlation_data,
        )
        if status == "ok":
            self.plan_changed.set()

    async def _on_message(self, message: IncomingMessage) -> None:
        ha = self.settings.homeassistant
        if ha.enabled and message.topic == ha_status_topic(ha.prefix):
            if message.payload.strip() == b"online":
                self.ha_birth.set()
            return
        if self.settings.mqtt.read_only:
            return
        topics = self.topics
        if message.topic == topics.refresh:
            name = "refresh"
        elif message.topic.startswith(f"{topics.root}/set/"):
            name = message.topic.rsplit("/", 1)[1]
        else:
            return
        if message.retain and not message.payload:
            # The deletion of a retained command (our own clear included) is delivered flagged
            # retained: it is no command, and refusing it would clear it again, forever.
            return
        if message.retain:
            # A retained command would run again on every restart; remove it from the broker.
            log.warning("retained_command_cleared", topic=message.topic)
            await self.bridge.clear_retained(message.topic)
        command = parse_command(
            name,
            message.payload,
            retained=message.retain,
            now=self.clock(),
            message_age=message.age(self.clock()),
            max_age=self.settings.mqtt.command_max_age,
            device_ids=self.agent.device_ids,
            response_topic=message.response_topic,
            correlation_data=message.correlation_data,
        )
        await self.runner.submit(command)


def _write_heartbeat(path: Path, stamp: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(stamp + "\n", encoding="utf-8")
    tmp.replace(path)


async def run_daemon(settings: Settings, *, clock: Clock = utc_now) -> bool:
    """Run until SIGTERM or SIGINT; True if the stop outlived :data:`STOP_BOUND`."""
    daemon = Daemon(settings, clock=clock)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.request_stop)
    try:
        await daemon.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return daemon.stop_overdue


def cli_run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    configure_logging(settings.logging.level, settings.logging.format)
    for warning in ignored_environment():
        log.warning("environment_variable_ignored", detail=warning)
    if asyncio.run(run_daemon(settings)):
        # A task outlived the stop bound (logged with its stack); asyncio.run's own clean-up
        # would wait for it without a bound, so leave now, as Docker's SIGKILL would.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_STOP_OVERDUE)
    return 0


__all__ = ["STOP_BOUND", "Daemon", "cli_run", "run_daemon"]
