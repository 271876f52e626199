"""Configuration: one pydantic model per section, read from TOML plus ``IOAGENT_…`` variables.

Environment variables override the file and use ``__`` for nesting, for example
``IOAGENT_OCTOPUS__API_KEY`` or ``IOAGENT_MQTT__HOST``. Secrets may also be given as files
(Docker secrets): ``IOAGENT_OCTOPUS__API_KEY_FILE=/run/secrets/octopus_api_key``.

Every field carries a ``description``: it is the user's documentation, and
``config.example.toml`` is checked against it by the tests.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

LIVE_API_URL = "https://api.octopus.energy/v1/graphql/"
ENV_PREFIX = "IOAGENT_"
CONFIG_ENV = "IOAGENT_CONFIG"

HARD_MAX_PLANNED_PER_HOUR = 20
"""The cap on planned-dispatch queries per hour that configuration cannot raise."""
HARD_MAX_PLANNED_PER_MINUTE = 4
"""Octopus allows 5 a minute; ioagent keeps one in hand."""


HINT_COMPARE = "compare with config.example.toml; every key is listed there"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and key.

    ``hint`` says what to do about this kind of failure (a missing file is fixed differently
    from a TOML syntax error or an unreadable secret file).
    """

    def __init__(self, message: str, hint: str = HINT_COMPARE) -> None:
        super().__init__(message)
        self.hint = hint

    def report(self) -> str:
        """The message and its hint, as printed by the command-line tools."""
        return f"{self}\nhint: {self.hint}"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _validate_hhmm(value: str) -> str:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError("must be a 24-hour time written HH:MM, e.g. 23:30")
    return value


def _validate_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {value!r}; use an IANA name like Europe/London"
        ) from exc
    return value


EXAMPLE_API_KEY = "sk_live_your_key_here"
"""The placeholder in config.example.toml; a config that still holds it is not filled in."""
API_KEY_PATTERN = re.compile(r"sk_live_[A-Za-z0-9]{16,}")
"""What Octopus's keys look like: ``sk_live_`` and a long run of letters and digits."""
ACCOUNT_NUMBER_PATTERN = re.compile(r"A-[A-Z0-9]{8}")
"""An Octopus account number: ``A-`` and 8 letters or digits, e.g. ``A-1234ABCD``."""


def _validate_api_key(value: SecretStr) -> SecretStr:
    # The messages never repeat the value: it is a secret, even when it is wrong.
    key = value.get_secret_value()
    if key == EXAMPLE_API_KEY:
        raise ValueError(
            "is still the placeholder from config.example.toml; put your own key here "
            "(Octopus website: My account > Personal details > API access)"
        )
    if not API_KEY_PATTERN.fullmatch(key):
        raise ValueError(
            "does not look like an Octopus API key, which starts sk_live_ followed by a long "
            "run of letters and digits; copy it again from Personal details > API access"
        )
    return value


def _validate_account_number(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None  # empty: discovered from the key
    number = value.strip().upper()
    if not ACCOUNT_NUMBER_PATTERN.fullmatch(number):
        raise ValueError(
            "does not look like an Octopus account number, which is A- followed by 8 letters "
            "or digits (e.g. A-1234ABCD, at the top of your bill); leave it out to discover it"
        )
    return number


class OctopusSettings(Section):
    api_key: SecretStr = Field(
        description="Your Octopus API key (starts sk_live_). Octopus app or website: "
        "Account > Personal details > API access. Required.",
    )
    account_number: str | None = Field(
        default=None,
        description="Account number like A-1234ABCD. Leave empty to discover it when the key sees "
        "exactly one account.",
    )
    api_url: str = Field(
        default=LIVE_API_URL,
        description="Kraken GraphQL endpoint. Change it only to use the built-in simulator.",
    )
    rest_url: str = Field(
        default="https://api.octopus.energy",
        description="Octopus's public products REST API (unit rates). Change it only to use the "
        "built-in simulator.",
    )
    connect_timeout: float = Field(
        default=10.0, gt=0, le=120, description="Seconds to wait for a TCP/TLS connection."
    )
    read_timeout: float = Field(
        default=30.0, gt=0, le=300, description="Seconds to wait for an API answer."
    )

    _api_key = field_validator("api_key")(_validate_api_key)
    _account_number = field_validator("account_number")(_validate_account_number)


class TlsSettings(Section):
    enabled: bool = Field(default=False, description="Connect to the broker with TLS.")
    ca_file: Path | None = Field(
        default=None, description="CA certificate (PEM) to trust; empty uses the system store."
    )
    certfile: Path | None = Field(default=None, description="Client certificate (PEM), optional.")
    keyfile: Path | None = Field(default=None, description="Client private key (PEM), optional.")
    insecure: bool = Field(
        default=False,
        description="Skip certificate host-name checks. Only for self-signed test setups.",
    )


class MqttSettings(Section):
    host: str = Field(default="localhost", description="MQTT broker host name or IP.")
    port: int = Field(default=1883, ge=1, le=65535, description="MQTT broker port.")
    username: str | None = Field(default=None, description="Broker user name, if it needs one.")
    password: SecretStr | None = Field(default=None, description="Broker password, if needed.")
    tls: TlsSettings = Field(default_factory=TlsSettings, description="TLS settings.")
    client_id: str | None = Field(
        default=None,
        description="MQTT client id; empty derives ioagent-<account> so two installs never clash.",
    )
    base_topic: str = Field(
        default="ioagent",
        description="First level of every topic ioagent publishes and listens to.",
    )
    read_only: bool = Field(
        default=False,
        description="Publish only: ignore every command topic (nothing can change your charging).",
    )
    keepalive: int = Field(default=30, ge=5, le=600, description="MQTT keepalive, seconds.")
    command_max_age: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="A command older than this many seconds (MQTT v5 message expiry, or queued "
        "while ioagent was offline) is refused with an error reply instead of being run late.",
    )

    @field_validator("base_topic")
    @classmethod
    def _check_base_topic(cls, value: str) -> str:
        if not value or any(c in value for c in "#+") or value.startswith("/"):
            raise ValueError("must be a plain topic prefix such as 'ioagent' (no # or +)")
        return value.rstrip("/")


class TariffSettings(Section):
    timezone: str = Field(
        default="Europe/London", description="Zone of the tariff's wall-clock times."
    )
    offpeak_start: str = Field(
        default="23:30", description="Start of the fixed nightly off-peak window (HH:MM)."
    )
    offpeak_end: str = Field(
        default="05:30", description="End of the fixed nightly off-peak window (HH:MM)."
    )
    round_to_half_hour: bool = Field(
        default=True,
        description="Widen smart slots at home to the whole half-hours they touch, as Octopus "
        "bills them.",
    )
    smart_cap: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="The 6-hour smart-charge cap per 24 h: auto follows the device's "
        "isChargingDurationCapped flag; on/off forces it.",
    )
    smart_cap_hours: float = Field(
        default=6.0,
        gt=0,
        le=24,
        description="Hours of cheap smart charging per 24 h under the cap.",
    )
    product: Literal["auto", "legacy", "four_rate"] = Field(
        default="auto",
        description="Which Intelligent Octopus Go rules apply: auto reads the account's "
        "agreement from Octopus; legacy (INTELLI-…) or four_rate (IOG-SMB-…) overrides it.",
    )
    smart_offpeak: Literal["auto", "planned", "charging"] = Field(
        default="auto",
        description="Whether a smart slot makes the home off-peak as soon as it is planned, or "
        "only once the car is confirmed charging. auto: charging on four-rate, planned on legacy.",
    )
    allowance_hours: float = Field(
        default=6.0,
        gt=0,
        le=24,
        description="Four-rate: hours of cheap smart car charging per noon-to-noon period.",
    )
    allowance_counts: Literal["planned", "charging"] = Field(
        default="planned",
        description="Four-rate: whether a smart slot that ended without the car being seen "
        "charging still used allowance (planned, the cautious default) or not (charging).",
    )
    allowance_measure: Literal["half_hours", "slot_time"] = Field(
        default="half_hours",
        description="Four-rate: how a smart slot uses the allowance: every half-hour it touches "
        "as a whole half-hour (half_hours, what the billing's half-hour buckets suggest) or only "
        "the slot's own minutes (slot_time).",
    )
    across_noon: Literal["split", "slot_start"] = Field(
        default="split",
        description="Four-rate: a smart slot across noon is split at noon, each half-hour using "
        "the allowance of the period it falls in (split), or all of it uses the allowance of the "
        "period in which it starts (slot_start).",
    )

    _hhmm = field_validator("offpeak_start", "offpeak_end")(_validate_hhmm)
    _tz = field_validator("timezone")(_validate_timezone)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def start_time(self) -> time:
        return time.fromisoformat(self.offpeak_start)

    @property
    def end_time(self) -> time:
        return time.fromisoformat(self.offpeak_end)


class PollingSettings(Section):
    planned_per_hour: int = Field(
        default=HARD_MAX_PLANNED_PER_HOUR,
        ge=2,
        le=HARD_MAX_PLANNED_PER_HOUR,
        description="Budget of planned-dispatch queries per account per rolling hour "
        f"(at most {HARD_MAX_PLANNED_PER_HOUR}).",
    )
    planned_per_minute: int = Field(
        default=HARD_MAX_PLANNED_PER_MINUTE,
        ge=1,
        le=HARD_MAX_PLANNED_PER_MINUTE,
        description="Planned-dispatch queries per account per rolling minute "
        f"(at most {HARD_MAX_PLANNED_PER_MINUTE}; Octopus allows 5).",
    )
    offset_seconds: int | None = Field(
        default=None,
        ge=30,
        le=150,
        description="Seconds after :00 and :30 for the regular poll. Empty derives a stable "
        "value between 30 and 150 from the account number.",
    )
    active_interval: int = Field(
        default=300,
        ge=60,
        le=1800,
        description="Seconds between extra polls while charging or when a slot starts within "
        "the hour.",
    )
    command_rechecks: list[int] = Field(
        default_factory=lambda: [15, 45, 120, 300],
        description="Seconds after a successful command at which the plan is re-read.",
    )
    resync_pause: float = Field(
        default=30.0,
        ge=1,
        le=600,
        description="Seconds smart control stays suspended during the resync command.",
    )
    backoff_initial: float = Field(
        default=30.0, ge=1, le=600, description="First retry delay after an API error, seconds."
    )
    backoff_max: float = Field(
        default=1800.0, ge=10, le=7200, description="Longest retry delay after API errors."
    )
    misfire_grace: int = Field(
        default=300,
        ge=1,
        le=3600,
        description="A poll missed by up to this many seconds (sleep, clock jump) still runs once.",
    )


class StorageSettings(Section):
    path: Path = Field(
        default=Path("data/ioagent.db"),
        description="SQLite database file; a relative path in the config file is relative to "
        "that file's folder. The Docker image sets /data/ioagent.db on a volume.",
    )
    history_days: int = Field(
        default=400, ge=1, le=3650, description="Days of dispatch history to keep."
    )


class HomeAssistantSettings(Section):
    enabled: bool = Field(default=True, description="Publish Home Assistant MQTT discovery.")
    prefix: str = Field(default="homeassistant", description="HA discovery prefix.")


class VictronSettings(Section):
    enabled: bool = Field(default=False, description="Drive ESS scheduled-charge slots on a GX.")
    host: str = Field(default="venus.local", description="GX device host name or IP.")
    port: int = Field(default=1883, ge=1, le=65535, description="GX MQTT port (8883 for TLS).")
    username: str | None = Field(default=None, description="GX MQTT user name, if set.")
    password: SecretStr | None = Field(default=None, description="GX MQTT password, if set.")
    tls: TlsSettings = Field(default_factory=TlsSettings, description="TLS to the GX broker.")
    portal_id: str = Field(
        default="", description="VRM portal id; empty discovers it from N/+/system/0/Serial."
    )
    slots: list[int] = Field(
        default_factory=lambda: [3, 4],
        description="Scheduled-charge slot numbers (0-4) that ioagent owns. Others are untouched.",
    )
    soc: int = Field(default=100, ge=0, le=100, description="Target SoC written to owned slots.")
    allow_discharge: bool = Field(
        default=False, description="Let the battery discharge once the slot's SoC is reached."
    )
    include_fixed_window: bool = Field(
        default=False, description="Also charge in the fixed nightly off-peak window."
    )
    offpeak_confidence: Literal["auto", "charging", "planned"] = Field(
        default="auto",
        description="Which smart half-hours the battery charges in: charging (the car is seen "
        "charging), planned (also slots not yet confirmed). auto: charging on four-rate, planned "
        "on legacy.",
    )
    timezone: str = Field(default="Europe/London", description="The GX's local time zone.")
    dry_run: bool = Field(default=False, description="Log the writes without making them.")
    broker: Literal["auto", "dbus-flashmq", "dbus-mqtt"] = Field(
        default="auto",
        description=(
            "The GX's MQTT service: dbus-flashmq (Venus OS 3.20 and later) or dbus-mqtt "
            "(older); auto tells them apart on every connect."
        ),
    )

    _tz = field_validator("timezone")(_validate_timezone)

    @field_validator("slots")
    @classmethod
    def _check_slots(cls, value: list[int]) -> list[int]:
        if not value or any(not 0 <= slot <= 4 for slot in value) or len(set(value)) != len(value):
            raise ValueError("must be distinct slot numbers between 0 and 4, e.g. [3, 4]")
        return value


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level."
    )
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: pretty on a terminal, JSON lines otherwise."
    )


_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("ioagent_environ", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """Reads ``IOAGENT_…`` variables from the mapping given to :func:`load_settings`."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _ENVIRON.get()
        if environ is None:
            return super()._load_env_vars()
        if self.case_sensitive:
            return dict(environ)
        return {name.lower(): value for name, value in environ.items()}


class LedgerSettings(Section):
    """The settlement ledger (docs/ledger.md): what Octopus billed, half-hour by half-hour."""

    enabled: bool = Field(default=True, description="Fetch and keep the settled billing.")
    backfill_days: int = Field(
        default=30, ge=1, le=400, description="Days fetched on the first start."
    )
    refetch_days: int = Field(
        default=3,
        ge=0,
        le=14,
        description="Settled days fetched again each time, to catch re-bills.",
    )
    fetches_per_day: int = Field(
        default=2, ge=1, le=6, description="Fetches a day (settlement lags about two days)."
    )
    calls_per_hour: int = Field(
        default=30,
        ge=1,
        le=60,
        description="The ledger's own API budget, apart from the dispatch polls'.",
    )
    mpan: str | None = Field(
        default=None,
        pattern=r"^\d{13}$",
        description="Import MPAN (13 digits). Normally read from the account's agreements.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    octopus: OctopusSettings = Field(description="Octopus account and API.")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="Main MQTT broker.")
    tariff: TariffSettings = Field(default_factory=TariffSettings, description="Tariff rules.")
    polling: PollingSettings = Field(
        default_factory=PollingSettings, description="API budget and poll timing."
    )
    storage: StorageSettings = Field(default_factory=StorageSettings, description="Database.")
    homeassistant: HomeAssistantSettings = Field(
        default_factory=HomeAssistantSettings, description="Home Assistant discovery."
    )
    victron: VictronSettings = Field(
        default_factory=VictronSettings, description="Victron GX scheduled charging."
    )
    logging: LoggingSettings = Field(default_factory=LoggingSettings, description="Logging.")
    ledger: LedgerSettings = Field(
        default_factory=LedgerSettings, description="The settlement ledger."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment must win over it.
        return (_MappingEnvSource(settings_cls), init_settings)


_SECRET_FILE_SUFFIX = "_FILE"


def _secret_files_from_env(environ: dict[str, str]) -> dict[str, str]:
    """Turn ``IOAGENT_X__Y_FILE=/run/secrets/...`` into ``IOAGENT_X__Y=<file contents>``."""
    resolved: dict[str, str] = {}
    for name, path in environ.items():
        if (
            name.startswith(ENV_PREFIX)
            and name.endswith(_SECRET_FILE_SUFFIX)
            and name != CONFIG_ENV
        ):
            target = name[: -len(_SECRET_FILE_SUFFIX)]
            if target in environ:
                continue
            try:
                resolved[target] = Path(path).read_text(encoding="utf-8").strip()
            except FileNotFoundError as exc:
                raise ConfigError(
                    f"{name}: the secret file {path} does not exist.",
                    hint=f"create it with the secret on its first line, or correct {name}",
                ) from exc
            except OSError as exc:
                raise ConfigError(
                    f"{name}: cannot read secret file {path}: {exc.strerror}",
                    hint="make the file readable by the user ioagent runs as (in Docker uid "
                    f"1000: sudo chown 1000:1000 {path})",
                ) from exc
            except UnicodeDecodeError as exc:
                raise ConfigError(
                    f"{name}: the secret file {path} is not UTF-8 text.",
                    hint="write the secret as plain text on the file's first line",
                ) from exc
    return resolved


def _env_name(loc: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def _format_errors(exc: ValidationError, source: str, environ: dict[str, str]) -> str:
    lines = [f"Invalid configuration in {source}:"]
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = ".".join(str(part) for part in loc)
        origin = ""
        for depth in range(len(loc), 0, -1):
            env = _env_name(loc[:depth])
            if env in environ:
                origin = f" (set by environment variable {env})"
                break
        message = error["msg"]
        if error["type"] == "value_error":
            # Our validators' sentences, without pydantic's "Value error, " in front.
            message = str(error.get("ctx", {}).get("error", message.removeprefix("Value error, ")))
        if error["type"] == "missing":
            message = "is required but missing"
            section = Settings.model_fields.get(str(loc[0])) if len(loc) == 1 else None
            if section is not None and isinstance(section.annotation, type):
                required = [
                    name
                    for name, info in getattr(section.annotation, "model_fields", {}).items()
                    if info.is_required()
                ]
                if required:
                    key = ", ".join(f"{loc[0]}.{name}" for name in required)
        elif error["type"] == "extra_forbidden":
            message = "is not a known setting (check the spelling; see config.example.toml)"
        lines.append(f"  - {key}: {message}{origin}")
    return "\n".join(lines)


CONFIG_RELATIVE_PATHS: tuple[tuple[str, ...], ...] = (
    ("storage", "path"),
    ("mqtt", "tls", "ca_file"),
    ("mqtt", "tls", "certfile"),
    ("mqtt", "tls", "keyfile"),
    ("victron", "tls", "ca_file"),
    ("victron", "tls", "certfile"),
    ("victron", "tls", "keyfile"),
)
"""File settings that a relative path in the config file names relative to that file."""


def _anchor_paths(data: dict[str, Any], config_dir: Path) -> dict[str, Any]:
    """Make the file's relative paths relative to ``config_dir``, the config file's folder.

    ``ioagent run`` and ``ioagent history`` must find the same database whatever directory
    they are started from. The default database (``data/ioagent.db``) lives there too. Paths
    from environment variables are left as they are: relative to the working directory.
    """
    anchored = {
        name: dict(value) if isinstance(value, dict) else value for name, value in data.items()
    }
    storage = anchored.setdefault("storage", {})
    if isinstance(storage, dict) and "path" not in storage:
        storage["path"] = str(StorageSettings.model_fields["path"].default)
    for loc in CONFIG_RELATIVE_PATHS:
        parent: Any = anchored
        for part in loc[:-1]:
            child = parent.get(part) if isinstance(parent, dict) else None
            if not isinstance(child, dict):
                break
            child = dict(child)
            parent[part] = child
            parent = child
        else:
            value = parent.get(loc[-1]) if isinstance(parent, dict) else None
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                parent[loc[-1]] = str(config_dir / value)
    return anchored


KNOWN_PLAIN_VARIABLES = frozenset({CONFIG_ENV, "IOAGENT_SETUP_NODE"})
"""``IOAGENT_…`` variables without ``__`` that mean something (to ioagent or its scripts)."""


def ignored_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """One sentence per ``IOAGENT_…`` variable that ioagent would silently ignore.

    The nesting separator is a double underscore: ``IOAGENT_MQTT_PORT`` sets nothing, while
    ``IOAGENT_MQTT__PORT`` sets ``[mqtt] port``.
    """
    environ = os.environ if environ is None else environ
    sections = sorted(Settings.model_fields, key=len, reverse=True)
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or "__" in upper or upper in KNOWN_PLAIN_VARIABLES:
            continue
        rest = upper.removeprefix(ENV_PREFIX)
        if rest.lower() in Settings.model_fields:
            continue  # a whole section as JSON, e.g. IOAGENT_MQTT='{"port": 1884}'
        suggestion = next(
            (
                f"{ENV_PREFIX}{section.upper()}__{rest[len(section) + 1 :]}"
                for section in sections
                if rest.lower().startswith(section + "_") and len(rest) > len(section) + 1
            ),
            None,
        )
        if suggestion:
            advice = f"section and key are joined by two underscores: did you mean {suggestion}?"
        else:
            advice = "ioagent's variables are IOAGENT_<SECTION>__<KEY>, e.g. IOAGENT_MQTT__PORT"
        warnings.append(f"environment variable {name} is ignored: {advice}")
    return warnings


def resolve_config_path(
    path: str | Path | None, environ: dict[str, str] | None = None
) -> Path | None:
    environ = dict(os.environ) if environ is None else environ
    if path is not None:
        return Path(path)
    named = environ.get(CONFIG_ENV)
    return Path(named) if named else None


def load_settings(
    path: str | Path | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Load settings from the named TOML file (or ``IOAGENT_CONFIG``) and the environment.

    A file that was named but is missing, unreadable TOML, unknown keys and invalid values all
    raise :class:`ConfigError` with a message that points at the file and the key.
    """
    environ = dict(os.environ) if environ is None else environ
    config_path = resolve_config_path(path, environ)
    data: dict[str, Any] = {}
    source = "the environment (no config file given)"
    if config_path is not None:
        source = str(config_path)
        try:
            raw = config_path.read_bytes()
        except FileNotFoundError as exc:
            raise ConfigError(
                f"Config file {config_path} does not exist.",
                hint=f"create it from the example: cp config.example.toml {config_path}, then "
                "set [octopus] api_key",
            ) from exc
        except IsADirectoryError as exc:
            raise ConfigError(
                f"Config file {config_path} is a directory, not a file.",
                hint="name the TOML file itself, e.g. --config config/config.toml",
            ) from exc
        except OSError as exc:
            raise ConfigError(
                f"Config file {config_path} cannot be read: {exc.strerror}",
                hint="make it readable by the user ioagent runs as (in Docker uid 1000: "
                f"sudo chown 1000:1000 {config_path})",
            ) from exc
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"Config file {config_path} is not valid TOML: {exc}",
                hint="fix the line named above: text values need double quotes "
                '(host = "broker"), and [section] headers stand on a line of their own',
            ) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"Config file {config_path} is not UTF-8 text.",
                hint="save it as UTF-8 (any plain-text editor can)",
            ) from exc
        data = _anchor_paths(data, config_path.absolute().parent)

    resolved = _secret_files_from_env(environ)
    environ = {
        name: value
        for name, value in environ.items()
        if not (name.startswith(ENV_PREFIX) and name.endswith(_SECRET_FILE_SUFFIX))
    } | resolved
    token = _ENVIRON.set(environ)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, environ)) from None
    finally:
        _ENVIRON.reset(token)
