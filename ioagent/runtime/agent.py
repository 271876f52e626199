"""One account's pipeline: poll result -> effective plan -> events -> retained state.

The agent owns no sockets and no timers. It is given a Kraken client, a publisher, a store and
a clock, so the whole pipeline runs in tests without a broker and without sleeping. The daemon
decides *when* to poll (``ioagent.runtime.poller``) and *when* a boundary is due (``ioagent.runtime.daemon``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from ioagent.budget import CallBudget, is_quiet_second
from ioagent.config import TariffSettings
from ioagent.kraken.client import KrakenClient, PollResult
from ioagent.kraken.errors import (
    ApiChanged,
    AuthFailed,
    KrakenError,
    RateLimited,
)
from ioagent.kraken.rest import ProductsClient
from ioagent.kraken.types import (
    BOOST,
    SMART,
    UNKNOWN,
    Agreement,
    CompletedDispatch,
    Device,
    Dispatch,
    UnitRate,
    parse_unit_rates,
)
from ioagent.logs import get_logger
from ioagent.mqtt.publisher import Publisher
from ioagent.mqtt.topics import NO_TIME, Topics
from ioagent.store.async_store import AsyncStore
from ioagent.store.database import watching_since_key
from ioagent.tariff.evidence import evidence_from
from ioagent.tariff.plan import (
    DEFAULT_KEEP,
    PlanEvent,
    PlannedSlot,
    carry_started,
    classify_completed,
    diff,
    drop_finished,
    event_json,
    located,
    slot_json,
)
from ioagent.tariff.product import Product, from_agreement, in_force, resolve
from ioagent.tariff.rates import (
    FEED_PATHS,
    FOUR_RATE_BANDS,
    LEGACY_BANDS,
    Band,
    RateFeeds,
    half_hour_rates,
    rate_at,
)
from ioagent.tariff.rules import TariffRules
from ioagent.tariff.signals import ProductRules, Signals, evaluate, timeline, transitions
from ioagent.tariff.windows import Window, floor_half_hour
from ioagent.timeutil import Clock, iso_z, parse_iso

ApiState = Literal["ok", "degraded", "rate_limited", "auth_failed", "api_changed"]
API_STATES: tuple[ApiState, ...] = get_args(ApiState)

ACTIVE_STATES = frozenset({"SMART_CONTROL_IN_PROGRESS", "BOOSTING"})
KEEP_FINISHED = DEFAULT_KEEP  # the cap needs the earlier slots of the tariff day
TRANSITIONS_HORIZON = timedelta(hours=24)
SOON = timedelta(hours=1)
CLASSIFY_LOOKBACK = timedelta(hours=24)
"""How long before a completed record a slot that made it may have started."""
COMPLETED_WINDOW = timedelta(hours=12)
"""About what ``completedDispatches`` returns, and so what ``dispatches/completed`` lists."""
CHARGING_STATE = "SMART_CONTROL_IN_PROGRESS"
PRODUCT_REFRESH = timedelta(hours=24)
"""How often the account's agreements (its product) and the tariff's rates are read again."""
PRODUCT_RETRY = timedelta(minutes=15)
"""After a failed agreements or rates read, the next try waits at least this long."""
RATES_HORIZON = timedelta(hours=24)
PRODUCT_META = "product:{account}"
RATES_META = "rates:{account}"
SIDE_BUDGETS_META = "side_budgets:{account}"
"""The calls made on the agreements, rates and device-check budgets in the last hour (JSON)."""
CHARGING_META = "charging_seen:{account}"
"""Instants the car was seen charging (JSON): the four-rate home bonus's evidence."""

log = get_logger(__name__)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _time_or_empty(value: datetime | None) -> str:
    return iso_z(value) if value is not None else ""


def _time_or_none(value: datetime | None) -> str:
    return iso_z(value) if value is not None else NO_TIME


def api_state_for(error: KrakenError) -> ApiState:
    if isinstance(error, AuthFailed):
        return "auth_failed"
    if isinstance(error, RateLimited):
        return "rate_limited"
    if isinstance(error, ApiChanged):
        return "api_changed"
    return "degraded"


@dataclass
class ApiHealth:
    state: ApiState = "ok"
    last_success: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None

    @classmethod
    def from_json(cls, payload: str) -> ApiHealth:
        """The health a previous run published; anything unreadable gives a blank one."""
        try:
            data = json.loads(payload)
            state = data.get("state")
            health = cls(state=state if state in API_STATES else "degraded")
            health.last_error = data.get("last_error")
            for name in ("last_success", "last_error_at"):
                if data.get(name):
                    setattr(health, name, parse_iso(data[name]))
        except (ValueError, TypeError, AttributeError):
            return cls()
        return health

    def as_json(
        self,
        now: datetime,
        storage_error: str | None = None,
        *,
        product_note: str | None = None,
        rates_note: str | None = None,
        ledger_note: str | None = None,
    ) -> str:
        stale = None
        if self.last_success is not None:
            stale = max(0, int((now - self.last_success).total_seconds()))
        return json.dumps(
            {
                "state": self.state,
                "last_success": _time_or_empty(self.last_success) or None,
                "last_error": self.last_error,
                "last_error_at": _time_or_empty(self.last_error_at) or None,
                "stale_seconds": stale,
                "storage": "ok" if storage_error is None else f"degraded: {storage_error}",
                "product": product_note or "ok",
                "rates": rates_note or "ok",
                "ledger": ledger_note or "ok",
            },
            sort_keys=True,
        )


@dataclass
class PollOutcome:
    ok: bool
    events: list[PlanEvent] = field(default_factory=list)
    error: KrakenError | None = None
    devices_changed: bool = False


class AccountAgent:
    """Keeps one account's plan and publishes its retained topics when they change."""

    def __init__(
        self,
        *,
        account: str,
        client: KrakenClient,
        publisher: Publisher,
        store: AsyncStore | None,
        topics: Topics,
        tariff: TariffSettings,
        clock: Clock,
    ) -> None:
        self.account = account
        self.client = client
        self.publisher = publisher
        self.store = store
        self.topics = topics
        self.tariff_settings = tariff
        self.clock = clock
        self.devices: list[Device] = []
        self.devices_listed = False
        """True once a poll has listed the account's devices (an empty list is an answer too)."""
        self.plans: dict[str, tuple[Dispatch, ...]] = {}
        self.completed: list[CompletedDispatch] = []
        self.health = ApiHealth()
        self.have_plan = False
        self._published: dict[str, str] = {}
        self._watching_recorded = False
        self.polled = False
        """True once a poll has ended, with a plan or an error: until then a new install knows
        nothing about smart slots, and its off-peak topics would be a guess."""
        self.rates_client: ProductsClient | None = None
        """Set by the daemon: reads the tariff's unit rates (None: rates are not published)."""
        self.agreements: list[Agreement] = []
        """The account's active agreements as last read: an announced migration (an agreement
        that ends, and one that starts then) changes the rules at its exact instant."""
        self.stored_product: Product | None = None
        """The product last known in force (stored by this run or an earlier one)."""
        self.product_checked_at: datetime | None = None
        self.product_retry_at: datetime | None = None
        self.product_note: str | None = None
        self.product_refresh = PRODUCT_REFRESH
        self.product_budget = CallBudget(per_hour=4, per_minute=1)
        self.rates: RateFeeds | None = None
        self.rates_checked_at: datetime | None = None
        self.rates_retry_at: datetime | None = None
        self.rates_note: str | None = None
        self.ledger_note: str | None = None
        """Set by the ledger task: what is wrong with the settled billing (None: ``ok``)."""
        self.rates_budget = CallBudget(per_hour=12, per_minute=6)
        self.device_budget = CallBudget(per_hour=12, per_minute=2)
        self.charging_seen: list[datetime] = []
        """Instants at which a device reported SMART_CONTROL_IN_PROGRESS (charging evidence)."""
        self.device_reads = 0
        """Commands' device re-reads so far: a poll under way during one has older states."""
        self._publishing = asyncio.Lock()
        """One publication of the plan, device or tariff topics at a time. The poll, a command's
        re-read and the boundary timer publish concurrently, and each publication awaits the
        broker topic by topic: interleaved, an older one finished after a newer one."""

    # ----- derived state -----
    @property
    def smart_devices(self) -> list[Device]:
        """The devices Octopus can smart-charge (live EVs and charge points): the only ones
        whose planned dispatches are polled and that commands act on."""
        return [device for device in self.devices if device.is_smart_chargeable]

    @property
    def device_ids(self) -> list[str]:
        """Ids of :attr:`smart_devices`, in the order Octopus lists them."""
        return [device.id for device in self.smart_devices]

    @property
    def primary_device(self) -> Device | None:
        """The device the ``device`` topics describe: the first smart-chargeable one, else the
        first live one, else the first listed."""
        live = [device for device in self.devices if device.is_live]
        candidates = self.smart_devices or live or self.devices
        return candidates[0] if candidates else None

    @property
    def plan(self) -> list[Dispatch]:
        """Every device's effective plan, each slot located by the completed dispatches."""
        merged = [slot for slots in self.plans.values() for slot in slots]
        ordered = sorted(merged, key=lambda d: (d.start, d.end, d.device_id or "", d.type))
        # Each slot takes its location from the completed records (docs/tariff.md, R7).
        slots = list(located(ordered, self.completed))
        # A completed record that no planned slot covers (it ran before this run started, or
        # vanished unseen) was a dispatch all the same: it used allowance. Octopus sends such
        # records without a type (UNKNOWN): they count towards the allowance as smart, the
        # cautious reading (the allowance runs out sooner, never later); `ioagent history`
        # still reports their energy as "other", not as smart.
        for record in self.completed:
            done = record.as_dispatch()
            if done.type == UNKNOWN:
                done = dataclasses.replace(done, type=SMART)
            if done.type == SMART and not any(
                slot.start < done.end and done.start < slot.end for slot in slots
            ):
                slots.append(done)
        return sorted(slots, key=lambda d: (d.start, d.end, d.device_id or "", d.type))

    @property
    def known_product(self) -> Product | None:
        """The product in force now by the agreements read, else the last known one."""
        agreement = in_force(self.agreements, self.clock())
        return from_agreement(agreement) if agreement is not None else self.stored_product

    @property
    def product(self) -> Product:
        """The product whose rules apply: ``[tariff] product`` or what the account says."""
        return resolve(self.tariff_settings.product, self.known_product)

    def next_product_change(self, now: datetime) -> datetime | None:
        """The next instant at which an agreement read ends or starts."""
        edges = [
            edge
            for agreement in self.agreements
            for edge in (agreement.valid_from, agreement.valid_to)
            if edge is not None and edge > now
        ]
        return min(edges, default=None)

    def _device_capped(self) -> str | None:
        device = self.primary_device
        return (
            device.preferences.charging_duration_capped if device and device.preferences else None
        )

    def legacy_rules(self) -> TariffRules:
        """The legacy rules' settings (the history report and the fixed window use them)."""
        return TariffRules.from_settings(self.tariff_settings, self._device_capped())

    def rules(self, product: Product | None = None) -> ProductRules:
        family = (product or self.product).family
        return ProductRules.from_settings(self.tariff_settings, family, self._device_capped())

    def evidence(self) -> list[Window]:
        """Charging evidence: completed smart records and observed SMART_CONTROL_IN_PROGRESS."""
        return evidence_from(self.completed, self.charging_seen)

    def tariff_state(self, now: datetime) -> Signals:
        return evaluate(self.rules(), self.plan, self.evidence(), now)

    def record_device_states(self, devices: Sequence[Device], now: datetime) -> bool:
        """Remember that a device was charging now; True when that is new evidence."""
        self.charging_seen = [at for at in self.charging_seen if at > now - KEEP_FINISHED]
        if any(device.current_state == CHARGING_STATE for device in devices):
            self.charging_seen.append(now)
            return True
        return False

    # ----- what a restart must not forget: side budgets and charging evidence -----
    def _side_budgets(self) -> dict[str, CallBudget]:
        return {
            "agreements": self.product_budget,
            "rates": self.rates_budget,
            "devices": self.device_budget,
        }

    async def _remember_side_budgets(self, now: datetime) -> None:
        """Stored on every spend: a crash loop must not get a fresh hour of calls each start."""
        if self.store is None:
            return
        spent = {
            name: [iso_z(at) for at in b.recent(now)] for name, b in self._side_budgets().items()
        }
        await self.store.set_meta(SIDE_BUDGETS_META.format(account=self.account), json.dumps(spent))

    async def _remember_charging(self) -> None:
        """Stored when new: after a restart in a daytime slot, the home bonus must not wait
        for the car to be seen charging again (four-rate ``smart_offpeak = "charging"``)."""
        if self.store is None:
            return
        payload = json.dumps([iso_z(at) for at in self.charging_seen])
        await self.store.set_meta(CHARGING_META.format(account=self.account), payload)

    async def _restore_side_state(self, now: datetime) -> None:
        assert self.store is not None
        try:
            spent = json.loads(
                await self.store.get_meta(SIDE_BUDGETS_META.format(account=self.account)) or "{}"
            )
            for name, budget in self._side_budgets().items():
                budget.restore((parse_iso(str(at)) for at in spent.get(name, [])), now)
            seen = json.loads(
                await self.store.get_meta(CHARGING_META.format(account=self.account)) or "[]"
            )
            self.charging_seen = sorted(
                at
                for at in (parse_iso(str(item)) for item in seen)
                if now - KEEP_FINISHED < at <= now
            )
        except (TypeError, ValueError, AttributeError):
            log.warning("stored_side_state_unreadable", hint="starting with fresh budgets")

    def is_active(self, now: datetime) -> bool:
        """Something is happening: charging, boosting, or a slot starts within the hour."""
        if any(device.current_state in ACTIVE_STATES for device in self.smart_devices):
            return True
        return any(slot.start <= now + SOON and slot.end > now for slot in self.plan)

    # ----- publishing -----
    async def _put(self, topic: str, payload: str, *, retain: bool = True) -> None:
        if retain:
            if self._published.get(topic) == payload:
                return
            # Claimed before the first await: the poll and the boundary timer publish concurrently.
            self._published[topic] = payload
        # Stored before it is published, so what a subscriber saw is never missing from the
        # database after a stop (the write runs on the store's thread meanwhile).
        saved = (
            self.store.queue_retained(topic, payload, self.clock())
            if retain and self.store is not None
            else None
        )
        await self.publisher.publish(topic, payload, retain=retain)
        if saved is not None:
            await saved

    async def set_ledger_note(self, note: str | None) -> None:
        """The ledger's state changed: say so on the ``api`` topic."""
        self.ledger_note = note
        await self.publish_api()

    async def publish_api(self) -> None:
        storage_error = None
        if self.store is not None and not self.store.healthy:
            storage_error = self.store.error or "database unavailable; keeping state in memory"
        await self._put(
            self.topics.api,
            self.health.as_json(
                self.clock(),
                storage_error,
                product_note=self.product_note,
                rates_note=self.rates_note,
                ledger_note=self.ledger_note,
            ),
        )

    async def publish_tariff(self, now: datetime | None = None) -> Signals:
        async with self._publishing:
            # Never older than the clock: a poll that read before a boundary and lands after it
            # would republish the state the boundary timer has just flipped.
            return await self._publish_tariff(max(now or self.clock(), self.clock()))

    async def _publish_tariff(self, now: datetime) -> Signals:
        # One product for the whole publish: a concurrent product change must not mix rules.
        product = self.product
        rules = self.rules(product)
        plan = self.plan
        evidence = self.evidence()
        state = evaluate(rules, plan, evidence, now)
        if not (self.have_plan or self.polled):
            # A fresh database during a running slot would say "false", then "true" a moment
            # later when the first poll lands: wait for that poll (or its failure) instead.
            return state
        t = self.topics
        await self._put(t.tariff, product.as_json())
        await self._put(t.offpeak, _bool(state.offpeak))
        await self._put(t.offpeak_confidence, state.confidence)
        await self._put(t.ev_offpeak, _bool(state.ev_offpeak))
        await self._publish_allowance(state, product)
        await self._publish_rates(product, rules, plan, evidence, state, now)
        await self._put(t.dispatching, _bool(state.dispatching))
        await self._put(t.next_offpeak_start, _time_or_none(state.next_offpeak_start))
        await self._put(t.offpeak_end, _time_or_none(state.offpeak_end))
        await self._put(t.next_dispatch_start, _time_or_none(state.next_dispatch_start))
        await self._put(t.next_dispatch_end, _time_or_none(state.next_dispatch_end))
        upcoming = [
            {
                "at": iso_z(flip.at),
                "offpeak": flip.offpeak,
                "ev_offpeak": flip.ev_offpeak,
                "confidence": flip.confidence,
                "dispatching": flip.dispatching,
            }
            for flip in transitions(rules, plan, evidence, now, TRANSITIONS_HORIZON)
        ]
        await self._put(t.transitions, json.dumps(upcoming))
        boosting = any(
            slot.type == BOOST and slot.start <= now < slot.end for slot in self.plan
        ) or any(device.current_state == "BOOSTING" for device in self.smart_devices)
        if self.devices:
            await self._put(t.boost, "on" if boosting else "off")
        return state

    async def _publish_allowance(self, state: Signals, product: Product) -> None:
        t = self.topics
        allowance = state.allowance
        if product.source == "default":
            # Four-rate rules stand in for an unknown product; its allowance is not a fact.
            allowance = None
        if allowance is None:
            # Not four-rate (any more): clear what a four-rate run published.
            for topic in t.allowance_topics:
                if self._published.get(topic):
                    await self._put(topic, "")
            return
        await self._put(t.allowance_remaining, f"{allowance.remaining:.2f}")
        await self._put(t.allowance_used, f"{allowance.used:.2f}")
        await self._put(t.allowance_resets_at, iso_z(allowance.resets_at))
        await self._put(t.allowance_exhausted_at, _time_or_none(allowance.exhausted_at))

    async def _publish_rates(
        self,
        product: Product,
        rules: ProductRules,
        plan: Sequence[Dispatch],
        evidence: Sequence[Window],
        state: Signals,
        now: datetime,
    ) -> None:
        if self.rates is None or self.rates.tariff != product.tariff:
            # Never a guessed number: nothing until the tariff's rates have been read.
            for topic in (self.topics.rate_home, self.topics.rate_ev, self.topics.rates):
                if self._published.get(topic):
                    await self._put(topic, "")
            return
        t = self.topics
        home, ev = rate_at(self.rates, now, state.offpeak, state.ev_offpeak)
        await self._put(t.rate_home, _rate(home))
        await self._put(t.rate_ev, _rate(ev))
        start = floor_half_hour(now, rules.legacy.zone)
        end = start + RATES_HORIZON
        segments = timeline(rules, plan, evidence, now, start, end)
        rows = half_hour_rates(self.rates, segments, start, end)
        await self._put(t.rates, json.dumps([row.as_json() for row in rows]))

    async def publish_plan(self, now: datetime) -> None:
        async with self._publishing:
            await self._publish_plan(max(now, self.clock()))  # as publish_tariff

    async def _publish_plan(self, now: datetime) -> None:
        t = self.topics
        plan = _upcoming(self.plan, now)
        await self._put(t.planned, json.dumps([slot_json(slot) for slot in plan]))
        remaining = sum(slot.kwh or 0.0 for slot in plan)
        await self._put(t.planned_kwh, f"{remaining:.2f}")
        completed = sorted(self.completed, key=lambda c: c.start)
        await self._put(t.completed, json.dumps([slot_json(c.as_dispatch()) for c in completed]))

    async def publish_device(self, now: datetime) -> None:
        async with self._publishing:
            # The devices are read inside the lock, so the last publication has the newest.
            await self._publish_device(max(now, self.clock()))

    async def _publish_device(self, now: datetime) -> None:
        device = self.primary_device
        if device is None:
            return
        t = self.topics
        await self._put(t.device_state, device.current_state or "UNKNOWN")
        await self._put(
            t.device,
            json.dumps(
                {
                    **_device_json(device),
                    "device_ids": self.device_ids,
                    # Every device on the account, the ones without smart charging included.
                    "devices": [_device_json(d) for d in self.devices],
                },
                sort_keys=True,
            ),
        )
        await self._put(t.smart_control, "off" if device.is_suspended else "on")
        prefs = device.preferences
        if prefs is None:
            return
        # The local date, not strftime("%A"): a weekday name depends on the process's locale.
        today = now.astimezone(self.tariff_settings.zone).date()
        target_soc = prefs.target_soc_for(today)
        ready_by = prefs.ready_by_for(today)
        if target_soc is not None:
            await self._put(t.target_soc, str(round(target_soc)))
        if ready_by is not None:
            await self._put(t.ready_by, ready_by.strftime("%H:%M"))
        await self._put(
            t.preferences,
            json.dumps(
                {
                    "mode": prefs.mode,
                    "target_type": prefs.target_type,
                    "unit": prefs.unit,
                    "charging_duration_capped": prefs.charging_duration_capped,
                    "schedules": [
                        {
                            "day_of_week": s.day_of_week,
                            "time": s.time.strftime("%H:%M"),
                            "max": s.max,
                            "min": s.min,
                        }
                        for s in prefs.schedules
                    ],
                },
                sort_keys=True,
            ),
        )

    async def publish_all(self, *, force: bool = False) -> None:
        """Publish every state topic; ``force`` re-sends unchanged ones too (HA restarted)."""
        if force:
            self._published.clear()
        now = self.clock()
        await self.publish_api()
        if self.have_plan:
            await self.publish_plan(now)
            await self.publish_tariff(now)
        await self.publish_device(now)

    # ----- restart -----
    async def restore(self) -> int:
        """Load the last plan and retained payloads from the store; return topics restored."""
        if self.store is None:
            return 0
        retained = await self.store.load_retained()
        prefix = self.topics.root + "/"
        restored = 0
        for topic, (payload, _at) in sorted(retained.items()):
            if topic == self.topics.api:
                self.health = ApiHealth.from_json(payload)
                continue
            if not topic.startswith(prefix):
                continue
            await self.publisher.publish(topic, payload, retain=True)
            self._published[topic] = payload
            restored += 1
        last_success = await self.store.get_meta(f"last_success:{self.account}")
        if last_success:
            self.health.last_success = parse_iso(last_success)
        device_ids = await self.store.get_meta(f"devices:{self.account}")
        for device_id in json.loads(device_ids) if device_ids else []:
            plan = await self.store.load_plan(self.account, device_id)
            if plan is not None:
                self.plans[device_id] = tuple(plan)
                self.have_plan = True
        stored_product = await self.store.get_meta(PRODUCT_META.format(account=self.account))
        if stored_product:
            self.stored_product = Product.from_json(stored_product)
        stored_rates = await self.store.get_meta(RATES_META.format(account=self.account))
        if stored_rates:
            self.rates = _rates_from_json(stored_rates)
        # The first publish after a restart must not replace the completed list with "[]".
        now = self.clock()
        await self._restore_side_state(now)
        self.completed = await self._classified(
            await self.store.completed_between(self.account, now - COMPLETED_WINDOW, now)
        )
        if restored or self.health.last_success is not None:
            # The last known API state and the data's age; a new install says nothing until its
            # first poll rather than claim "ok" for an API it has not reached yet.
            await self.publish_api()
        return restored

    async def _classified(self, completed: Sequence[CompletedDispatch]) -> list[CompletedDispatch]:
        """``completed`` typed by the slots this account was seen to plan (see
        :func:`classify_completed`): the plans held now, and the store's record of slots that ran
        (a boost dropped from the plan once it started is only there)."""
        if not completed:
            return []
        planned: list[PlannedSlot] = [slot for slots in self.plans.values() for slot in slots]
        if self.store is not None:
            start = min(c.start for c in completed) - CLASSIFY_LOOKBACK
            end = max(c.end for c in completed)
            planned.extend(await self.store.ran_between(self.account, start, end))
        return classify_completed(completed, planned)

    # ----- polling -----
    async def list_devices(self) -> KrakenError | None:
        """Read the account's devices if none are known yet; return the error if that failed.

        A poll asks for each known device's plan, so its cost in planned-dispatch queries is
        only known once the devices are (the devices query itself is not one of them).
        """
        if self.devices:
            return None
        now = self.clock()
        try:
            self.devices = await self.client.devices(self.account)
        except KrakenError as exc:
            self.polled = True
            await self._record_error(exc, now)
            return exc
        return None

    async def poll(self, may_retry: Callable[[], bool] | None = None) -> PollOutcome:
        """Poll once; ``may_retry`` is the call budget's say on a retry after a refused token."""
        now = self.clock()
        if self.known_product is None and self.product_checked_at is None:
            # At start-up with nothing known, read the product first: the poll's first publish
            # then already uses the account's rules. Later reads run in their own task
            # (the daemon's "products"), so they never delay a poll.
            await self.refresh_product_if_due(now)
        try:
            if not self.devices:
                self.devices = await self.client.devices(self.account)
            reads_before = self.device_reads
            result = await self.client.poll(self.account, self.device_ids, may_retry=may_retry)
        except KrakenError as exc:
            self.polled = True
            await self._record_error(exc, now)
            return PollOutcome(ok=False, error=exc)
        overtaken = self.device_reads != reads_before
        return await self.apply(result, now, devices_overtaken=overtaken)

    # ----- the product and its rates -----
    def _due(
        self, checked: datetime | None, retry: datetime | None, budget: CallBudget, now: datetime
    ) -> bool:
        if retry is not None and now < retry:
            return False
        if checked is not None and now - checked < self.product_refresh:
            return False
        return budget.allows(now) and not is_quiet_second(now)

    def next_product_work(self, now: datetime) -> datetime:
        """When the agreements or the rates are next due (for the daemon's products task)."""
        candidates = []
        work = [(self.product_checked_at, self.product_retry_at)]
        if self._rates_readable():
            work.append((self._rates_checked(), self.rates_retry_at))
        change = self.next_product_change(now)
        if change is not None:
            candidates.append(change)
        for checked, retry in work:
            at = now if checked is None else checked + self.product_refresh
            if retry is not None:
                at = max(at, retry)
            candidates.append(at)
        return max(now, min(candidates))

    async def refresh_product_if_due(self, now: datetime) -> bool:
        """Read the account's agreements when due; True when the product changed."""
        if not self._due(self.product_checked_at, self.product_retry_at, self.product_budget, now):
            return False
        self.product_budget.spend(now)
        await self._remember_side_budgets(now)
        before = self.product
        try:
            agreements = await self.client.agreements(self.account)
        except KrakenError as exc:
            self.product_retry_at = now + PRODUCT_RETRY
            known = self.known_product
            keeping = f"{known.product} ({known.family})" if known else "the default rules"
            self.product_note = f"degraded: agreements unreadable ({exc}); using {keeping}"
            log.warning("agreements_failed", account=self.account, error=str(exc), keeping=keeping)
            await self.publish_api()
            return False
        self.product_checked_at = now
        self.product_retry_at = None
        self.agreements = list(agreements)
        agreement = in_force(agreements, now)
        if agreement is None:
            self.product_note = (
                "degraded: no electricity agreement in force; keeping the last known"
            )
            log.warning("no_agreement_in_force", account=self.account, agreements=len(agreements))
        else:
            self.product_note = None
            self.stored_product = from_agreement(agreement)
            if self.store is not None:
                await self.store.set_meta(
                    PRODUCT_META.format(account=self.account), self.stored_product.stored_json()
                )
        product = self.product
        if product.family == "other":
            log.warning(
                "product_not_intelligent",
                account=self.account,
                product=product.product,
                hint="only the fixed night window is published as off-peak",
            )
        changed = product != before
        if changed:
            log.info(
                "product",
                account=self.account,
                product=product.product,
                tariff=product.tariff,
                family=product.family,
                source=product.source,
            )
            self.rates_checked_at = None  # a new tariff has new rates
        await self.publish_api()
        await self.publish_tariff(self.clock())
        return changed

    def _rates_checked(self) -> datetime | None:
        """When the rates of the tariff in force were read; None for a new tariff."""
        if self.rates is None or self.rates.tariff != self.product.tariff:
            return None
        return self.rates_checked_at

    def _rates_readable(self) -> bool:
        product = self.product
        return (
            self.rates_client is not None
            and product.product is not None
            and product.tariff is not None
            and product.family in ("legacy", "four_rate")
        )

    async def refresh_rates_if_due(self, now: datetime) -> bool:
        """Read the tariff's unit rates when due; True when they were read."""
        client = self.rates_client
        product = self.product
        if client is None or not self._rates_readable():
            return False
        assert product.product is not None and product.tariff is not None
        if not self._due(self._rates_checked(), self.rates_retry_at, self.rates_budget, now):
            return False
        bands = FOUR_RATE_BANDS if product.family == "four_rate" else LEGACY_BANDS
        feeds: dict[Band, list[Any]] = {}
        try:
            for band in bands:
                self.rates_budget.spend(now)
                await self._remember_side_budgets(now)
                feeds[band] = await client.unit_rates(
                    product.product,
                    product.tariff,
                    FEED_PATHS[band],
                    period_from=now - timedelta(days=1),
                    period_to=now + timedelta(days=2),
                )
        except KrakenError as exc:
            self.rates_retry_at = now + PRODUCT_RETRY
            self.rates_note = f"degraded: rates unreadable ({exc}); publishing the last known"
            log.warning("rates_failed", account=self.account, error=str(exc))
            await self.publish_api()
            return False
        previous = self.rates.feeds if self.rates and self.rates.tariff == product.tariff else {}
        merged: dict[Band, Any] = {}
        for band in bands:
            # Each band carries its own last value forward when its feed came back empty.
            merged[band] = feeds.get(band) or list(previous.get(band, ()))
        self.rates = RateFeeds(product.family, product.tariff, merged)
        log.info(
            "rates",
            account=self.account,
            tariff=product.tariff,
            entries={band: len(merged[band]) for band in bands},
        )
        self.rates_checked_at = now
        self.rates_retry_at = None
        missing = [band for band in bands if not merged[band]]
        self.rates_note = f"degraded: no {', '.join(missing)} rate published" if missing else None
        if self.store is not None:
            await self.store.set_meta(
                RATES_META.format(account=self.account), _rates_json(self.rates)
            )
        await self.publish_api()
        await self.publish_tariff(self.clock())
        return True

    async def check_device_state(self, now: datetime) -> bool:
        """Read the devices (not a planned-dispatch query) to see whether the car charges.

        Returns True when that gave new charging evidence. Own small budget; skipped in the
        quiet seconds.
        """
        if not self.device_budget.allows(now) or is_quiet_second(now):
            return False
        self.device_budget.spend(now)
        await self._remember_side_budgets(now)
        try:
            devices = await self.client.devices(self.account)
        except KrakenError as exc:
            log.info("device_state_check_failed", account=self.account, error=str(exc))
            return False
        if devices:
            self.devices = list(devices)
        seen = self.record_device_states(devices, now)
        if seen:
            await self._remember_charging()
        await self.publish_device(now)
        await self.publish_tariff(self.clock())
        return seen

    def take_devices(self, devices: Sequence[Device]) -> None:
        """A command's re-read of the devices: newer than any poll that was already under way."""
        self.devices = list(devices)
        self.device_reads += 1

    async def apply(
        self, result: PollResult, now: datetime, *, devices_overtaken: bool = False
    ) -> PollOutcome:
        """Fold one poll result into the plan and publish what changed.

        ``devices_overtaken``: a command re-read the devices while this poll was under way, so
        the poll's device states are older; they are dropped rather than published over the
        newer ones (a target SoC would flick back to its old value until the next poll).
        """
        events: list[PlanEvent] = []
        devices_changed = False
        if result.devices is not None and not devices_overtaken:
            devices_changed = not self.devices_listed or _device_keys(result.devices) != (
                _device_keys(self.devices)
            )
            self.devices = list(result.devices)
            self.devices_listed = True
            if self.record_device_states(self.devices, now):
                await self._remember_charging()
        if self.store is not None and (devices_changed or not self.have_plan):
            # Written before the plans, so a restart always finds the plans it must diff against.
            await self.store.set_meta(f"devices:{self.account}", json.dumps(self.device_ids))
        for device_id, fresh in result.planned.items():
            if fresh is None:
                continue
            previous = self.plans.get(device_id, ())
            effective = drop_finished(carry_started(previous, fresh, now), now, keep=KEEP_FINISHED)
            # Finished slots are kept for the cap but are not news: compare what is still to come.
            device_events = diff(_upcoming(previous, now), _upcoming(effective, now))
            events.extend(device_events)
            self.plans[device_id] = tuple(effective)
            if self.store is not None:
                await self.store.save_plan(self.account, device_id, effective, now)
        for device_id in list(self.plans):
            if self.devices and device_id not in self.device_ids:
                del self.plans[device_id]
        if result.completed is not None:
            if self.store is not None:
                await self.store.add_completed(self.account, result.completed)
            self.completed = await self._classified(result.completed)
        if any(plan is not None for plan in result.planned.values()):
            self.have_plan = True
        self.polled = True
        error = next(iter(result.errors.values()), None)
        if error is None:
            # Stored before publishing, so an interrupted poll still leaves its age behind.
            self.health = ApiHealth(state="ok", last_success=now)
            await self._remember_success(now)
        for event in events:
            payload = event_json(event, now)
            await self._put(self.topics.events, json.dumps(payload), retain=False)
            if self.store is not None:
                await self.store.log_event(self.account, payload, now)
        await self.publish_plan(now)
        await self.publish_device(now)
        await self.publish_tariff(now)
        if error is not None:
            await self._record_error(error, now)
        else:
            await self.publish_api()
        log.info(
            "poll",
            account=self.account,
            devices=len(self.devices),
            planned=len(_upcoming(self.plan, now)),  # as many as dispatches/planned lists
            completed=len(self.completed),
            changes=summarise(events),
            api=self.health.state,
        )
        return PollOutcome(
            ok=error is None, events=events, error=error, devices_changed=devices_changed
        )

    async def _remember_success(self, now: datetime) -> None:
        if self.store is None:
            return
        await self.store.set_meta(f"last_success:{self.account}", iso_z(now))
        if not self._watching_recorded:
            # ioagent history reports only the nights from here on: the ones the store saw.
            since = watching_since_key(self.account)
            if await self.store.get_meta(since) is None:
                await self.store.set_meta(since, iso_z(now))
            self._watching_recorded = True
        device = self.primary_device
        if device is not None and device.preferences is not None:
            # ioagent history applies the cap with the flag the device last reported.
            await self.store.set_meta(
                f"charging_duration_capped:{self.account}",
                device.preferences.charging_duration_capped or "",
            )

    async def _record_error(self, error: KrakenError, now: datetime) -> None:
        self.health.state = api_state_for(error)
        self.health.last_error = str(error)
        self.health.last_error_at = now
        log.warning(
            "api_error",
            account=self.account,
            kind=type(error).__name__,
            error=str(error),
            keeping="last known plan",
        )
        await self.publish_api()


def _device_keys(devices: Sequence[Device]) -> list[tuple[str, bool]]:
    """What makes the device list "changed": ids, and which of them can be smart-charged."""
    return [(device.id, device.is_smart_chargeable) for device in devices]


def _device_json(device: Device) -> dict[str, object]:
    return {
        "id": device.id,
        "type": device.typename,
        "device_type": device.device_type,
        "provider": device.provider,
        "make": device.make,
        "model": device.model,
        "status": device.status_current,
        "state": device.current_state,
        "suspended": device.is_suspended,
        "smart_charged": device.is_smart_chargeable,
    }


def _rate(value: float | None) -> str:
    # Empty, never a guessed number, when a band has not been published.
    return "" if value is None else f"{value:.6f}".rstrip("0").rstrip(".")


def _rates_json(feeds: RateFeeds) -> str:
    return json.dumps(
        {
            "family": feeds.family,
            "tariff": feeds.tariff,
            "feeds": {
                band: [
                    {
                        "value_inc_vat": r.value_inc_vat,
                        "valid_from": None if r.valid_from is None else iso_z(r.valid_from),
                        "valid_to": None if r.valid_to is None else iso_z(r.valid_to),
                    }
                    for r in entries
                ]
                for band, entries in feeds.feeds.items()
            },
        },
        sort_keys=True,
    )


def _rates_from_json(text: str) -> RateFeeds | None:
    try:
        data = json.loads(text)
        feeds: dict[Band, list[UnitRate]] = {}
        for band, entries in data["feeds"].items():
            feeds[band] = parse_unit_rates(entries)
        return RateFeeds(str(data["family"]), data.get("tariff"), feeds)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _upcoming(plan: Sequence[Dispatch], now: datetime) -> list[Dispatch]:
    return [slot for slot in plan if slot.end > now]


def summarise(events: Sequence[PlanEvent]) -> str:
    if not events:
        return "no change"
    parts = []
    for event in events:
        slot = event.slot
        span = f"{slot.type} {slot.start:%H:%M}-{slot.end:%H:%M}Z"
        if event.kind == "slot_changed" and event.previous is not None:
            before = event.previous
            span = f"{slot.type} {before.start:%H:%M}-{before.end:%H:%M}Z -> {slot.start:%H:%M}-{slot.end:%H:%M}Z"
        parts.append(f"{event.kind.removeprefix('slot_')} {span}")
    return "; ".join(parts)
