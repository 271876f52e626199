"""The public MQTT topic contract. Users build flows on these names: change them only with a
CHANGELOG entry. ``docs/mqtt.md`` documents every topic listed here."""

from __future__ import annotations

from dataclasses import dataclass

NO_TIME = "none"
"""The payload of a time topic when there is no such time (no next slot, say).

Not an empty payload: a retained empty message deletes the topic on the broker, so a subscriber
that arrives later would get nothing at all and wait forever."""

COMMANDS = ("target_soc", "ready_by", "smart_control", "boost", "resync")
"""Commands under ``{base}/{acct}/set/<name>``; ``refresh`` lives at ``{base}/{acct}/refresh``."""


def setup_status_topic(base: str) -> str:
    """``online`` while the account is being discovered (before any ``{base}/{acct}`` topic)."""
    return f"{base}/setup/status"


def setup_api_topic(base: str) -> str:
    """Why discovering the account fails, with a hint naming the config key (JSON)."""
    return f"{base}/setup/api"


LEDGER_TOPICS = ("yesterday", "month", "agreement")
"""The settlement ledger's retained topics, ``{base}/{acct}/ledger/<name>`` (docs/ledger.md)."""


@dataclass(frozen=True, slots=True)
class Topics:
    base: str
    account: str

    @property
    def root(self) -> str:
        return f"{self.base}/{self.account}"

    @property
    def status(self) -> str:
        """``online``/``offline`` of this account's instance; also its MQTT last will.

        Per account, never fleet-wide: an MQTT client has one last will, and a shared topic
        would let one instance's death mark every other instance's entities unavailable.
        """
        return f"{self.root}/status"

    # --- state (retained) ---
    @property
    def offpeak(self) -> str:
        return f"{self.root}/offpeak"

    @property
    def dispatching(self) -> str:
        return f"{self.root}/dispatching"

    @property
    def planned(self) -> str:
        return f"{self.root}/dispatches/planned"

    @property
    def completed(self) -> str:
        return f"{self.root}/dispatches/completed"

    @property
    def planned_kwh(self) -> str:
        return f"{self.root}/dispatches/planned_kwh"

    @property
    def next_offpeak_start(self) -> str:
        return f"{self.root}/offpeak/next_start"

    @property
    def offpeak_end(self) -> str:
        """End of the current off-peak period, or of the next one when peak now."""
        return f"{self.root}/offpeak/end"

    @property
    def next_dispatch_start(self) -> str:
        return f"{self.root}/dispatching/next_start"

    @property
    def next_dispatch_end(self) -> str:
        return f"{self.root}/dispatching/end"

    @property
    def transitions(self) -> str:
        return f"{self.root}/offpeak/transitions"

    @property
    def api(self) -> str:
        return f"{self.root}/api"

    @property
    def device_state(self) -> str:
        return f"{self.root}/device/state"

    @property
    def device(self) -> str:
        return f"{self.root}/device"

    @property
    def smart_control(self) -> str:
        return f"{self.root}/device/smart_control"

    @property
    def boost(self) -> str:
        return f"{self.root}/device/boost"

    @property
    def target_soc(self) -> str:
        return f"{self.root}/device/target_soc"

    @property
    def ready_by(self) -> str:
        return f"{self.root}/device/ready_by"

    @property
    def preferences(self) -> str:
        return f"{self.root}/device/preferences"

    @property
    def victron(self) -> str:
        return f"{self.root}/victron"

    # --- the settlement ledger (issue 16) ---
    def ledger(self, name: str) -> str:
        """``ledger/yesterday``, ``ledger/month`` or ``ledger/agreement`` (JSON, retained)."""
        if name not in LEDGER_TOPICS:
            raise ValueError(f"no ledger topic {name!r}; they are {', '.join(LEDGER_TOPICS)}")
        return f"{self.root}/ledger/{name}"

    # --- the account's product, the car allowance and the rates (issue 15) ---
    @property
    def tariff(self) -> str:
        """The product in force: JSON with product, tariff, family, source, validity."""
        return f"{self.root}/tariff"

    @property
    def offpeak_confidence(self) -> str:
        """``guaranteed`` / ``charging`` / ``planned`` / ``none``."""
        return f"{self.root}/offpeak/confidence"

    @property
    def ev_offpeak(self) -> str:
        """The car's smart charging is billed at the car's low rate now."""
        return f"{self.root}/ev/offpeak"

    @property
    def allowance_remaining(self) -> str:
        return f"{self.root}/allowance/remaining"

    @property
    def allowance_used(self) -> str:
        return f"{self.root}/allowance/used"

    @property
    def allowance_resets_at(self) -> str:
        return f"{self.root}/allowance/resets_at"

    @property
    def allowance_exhausted_at(self) -> str:
        return f"{self.root}/allowance/exhausted_at"

    @property
    def allowance_topics(self) -> tuple[str, ...]:
        """Published on four-rate only; cleared after a migration away from it."""
        return (
            self.allowance_remaining,
            self.allowance_used,
            self.allowance_resets_at,
            self.allowance_exhausted_at,
        )

    @property
    def rate_home(self) -> str:
        return f"{self.root}/rate/home"

    @property
    def rate_ev(self) -> str:
        return f"{self.root}/rate/ev"

    @property
    def rates(self) -> str:
        """JSON: the next 24 h in half-hours with the home's and the car's rates."""
        return f"{self.root}/rates"

    # --- not retained ---
    @property
    def events(self) -> str:
        return f"{self.root}/events"

    @property
    def response(self) -> str:
        return f"{self.root}/response"

    # --- commands ---
    def command(self, name: str) -> str:
        return f"{self.root}/set/{name}"

    @property
    def refresh(self) -> str:
        return f"{self.root}/refresh"

    @property
    def command_filter(self) -> str:
        return f"{self.root}/set/+"
