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
