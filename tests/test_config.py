from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from ioagent.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += field_paths(annotation, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_example_config_loads() -> None:
    settings = load_settings(EXAMPLE, environ={})
    assert settings.mqtt.base_topic == "ioagent"
    assert settings.victron.slots == [3, 4]


def test_example_mentions_every_key_with_a_comment() -> None:
    text = EXAMPLE.read_text()
    section = ""
    seen: set[str] = set()
    previous = ""
    for raw in text.splitlines():
        line = raw.strip()
        header = re.fullmatch(r"\[([a-z_.]+)\]", line)
        if header:
            section = header.group(1) + "."
        key = re.match(r"#?\s*([a-z_]+)\s*=", line)
        if key and section:
            seen.add(section + key.group(1))
            assert previous.startswith("#"), f"{section}{key.group(1)} needs a comment above it"
        previous = line
    missing = set(field_paths(Settings)) - seen
    assert not missing, f"config.example.toml lacks {sorted(missing)}"


def test_every_field_has_a_description() -> None:
    def walk(model: type[BaseModel], prefix: str) -> list[str]:
        lacking = []
        for name, info in model.model_fields.items():
            if not info.description:
                lacking.append(prefix + name)
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
                lacking += walk(info.annotation, f"{prefix}{name}.")
        return lacking

    assert walk(Settings, "") == []


def test_missing_named_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_unknown_key_names_the_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[octopus]\napi_key = "sk_test_abc"\n[mqtt]\nhots = "broker"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "mqtt.hots" in str(info.value)
    assert str(path) in str(info.value)
    assert "not a known setting" in str(info.value)


def test_invalid_value_points_at_key_and_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path, '[octopus]\napi_key = "sk_test_abc"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={"IOAGENT_TARIFF__OFFPEAK_START": "25:00"})
    message = str(info.value)
    assert "tariff.offpeak_start" in message
    assert "IOAGENT_TARIFF__OFFPEAK_START" in message


def test_missing_api_key_is_reported() -> None:
    with pytest.raises(ConfigError, match=r"octopus: is required|octopus.api_key"):
        load_settings(None, environ={})


def test_bad_toml_is_reported_with_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[octopus\napi_key = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path, environ={})


def test_environment_overrides_file_and_nests(tmp_path: Path) -> None:
    path = write(tmp_path, '[octopus]\napi_key = "sk_test_file"\n[mqtt]\nport = 1883\n')
    settings = load_settings(
        path, environ={"IOAGENT_MQTT__PORT": "2883", "IOAGENT_OCTOPUS__ACCOUNT_NUMBER": "A-1"}
    )
    assert settings.mqtt.port == 2883
    assert settings.octopus.account_number == "A-1"
    assert settings.octopus.api_key.get_secret_value() == "sk_test_file"


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[octopus]\napi_key = "sk_test_env_path"\n')
    settings = load_settings(None, environ={"IOAGENT_CONFIG": str(path)})
    assert settings.octopus.api_key.get_secret_value() == "sk_test_env_path"


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "octopus_api_key"
    secret.write_text("sk_test_from_secret_file\n")
    settings = load_settings(None, environ={"IOAGENT_OCTOPUS__API_KEY_FILE": str(secret)})
    assert settings.octopus.api_key.get_secret_value() == "sk_test_from_secret_file"


def test_secrets_are_not_in_repr_or_errors(tmp_path: Path) -> None:
    key = "sk_test_SECRET_SHOULD_NOT_SHOW"
    path = write(
        tmp_path,
        f'[octopus]\napi_key = "{key}"\n[mqtt]\npassword = "mqtt-SECRET-pw"\nport = 0\n',
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert key not in str(info.value)
    assert "mqtt-SECRET-pw" not in str(info.value)
    settings = load_settings(path, environ={"IOAGENT_MQTT__PORT": "1883"})
    assert key not in repr(settings)
    assert "mqtt-SECRET-pw" not in repr(settings)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[polling]\nplanned_per_hour = 60\n", "polling.planned_per_hour"),
        ("[polling]\nplanned_per_minute = 5\n", "polling.planned_per_minute"),
        ("[victron]\nslots = [3, 7]\n", "victron.slots"),
        ('[tariff]\ntimezone = "Mars/Olympus"\n', "tariff.timezone"),
        ('[mqtt]\nbase_topic = "io/#"\n', "mqtt.base_topic"),
    ],
)
def test_caps_and_checks(tmp_path: Path, toml: str, key: str) -> None:
    path = write(tmp_path, '[octopus]\napi_key = "sk_test_abc"\n' + toml)
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_settings(path, environ={})
