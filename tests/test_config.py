from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from ioagent.config import ConfigError, Settings, ignored_environment, load_settings

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


REAL_LOOKING_KEY = "sk_live_FAKEkeyForTheConfigTests01"


def test_example_config_loads_once_the_key_is_filled_in() -> None:
    settings = load_settings(EXAMPLE, environ={"IOAGENT_OCTOPUS__API_KEY": REAL_LOOKING_KEY})
    assert settings.mqtt.base_topic == "ioagent"
    assert settings.victron.slots == [3, 4]


def test_the_example_placeholder_key_is_rejected_with_a_sentence() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(EXAMPLE, environ={})
    message = str(info.value)
    assert str(EXAMPLE) in message
    assert "octopus.api_key: is still the placeholder from config.example.toml" in message
    assert "Value error" not in message


@pytest.mark.parametrize(
    "key", ["hello", "sk_live_short", "sk_test_abcdefghijklmnopqrstu", "sk_live_has spaces 0123456"]
)
def test_a_key_that_does_not_look_like_an_octopus_key_is_rejected(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, f'[octopus]\napi_key = "{key}"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    message = str(info.value)
    assert str(path) in message
    assert "octopus.api_key: does not look like an Octopus API key" in message
    assert key not in message, "the key is a secret even when it is wrong"
    assert "Value error" not in message


@pytest.mark.parametrize("number", ["12345", "A-1234", "A-1234ABCD9", "B-1234ABCD", "A_1234ABCD"])
def test_an_account_number_that_is_not_a_dash_and_8_characters_is_rejected(
    tmp_path: Path, number: str
) -> None:
    path = write(
        tmp_path, f'[octopus]\napi_key = "{REAL_LOOKING_KEY}"\naccount_number = "{number}"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    message = str(info.value)
    assert str(path) in message
    assert "octopus.account_number: does not look like an Octopus account number" in message
    assert "Value error" not in message


def test_an_account_number_is_tidied_and_an_empty_one_means_discover(tmp_path: Path) -> None:
    path = write(
        tmp_path, f'[octopus]\napi_key = "{REAL_LOOKING_KEY}"\naccount_number = " a-1234abcd "\n'
    )
    assert load_settings(path, environ={}).octopus.account_number == "A-1234ABCD"
    empty = write(tmp_path, f'[octopus]\napi_key = "{REAL_LOOKING_KEY}"\naccount_number = ""\n')
    assert load_settings(empty, environ={}).octopus.account_number is None


def test_the_simulators_own_key_and_accounts_are_valid_settings() -> None:
    from ioagent.simulator.state import (
        DEFAULT_ACCOUNT,
        DEFAULT_API_KEY,
        SECOND_ACCOUNT,
        SECOND_API_KEY,
    )

    for key, account in ((DEFAULT_API_KEY, DEFAULT_ACCOUNT), (SECOND_API_KEY, SECOND_ACCOUNT)):
        settings = Settings.model_validate({"octopus": {"api_key": key, "account_number": account}})
        assert settings.octopus.account_number == account


def test_pydantics_value_error_prefix_is_dropped(tmp_path: Path) -> None:
    path = write(
        tmp_path, f'[octopus]\napi_key = "{REAL_LOOKING_KEY}"\n[tariff]\noffpeak_start = "7pm"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "tariff.offpeak_start: must be a 24-hour time written HH:MM" in str(info.value)
    assert "Value error" not in str(info.value)


def test_each_kind_of_unreadable_input_gets_its_own_hint(tmp_path: Path) -> None:
    hints = []
    with pytest.raises(ConfigError) as missing:
        load_settings(tmp_path / "config.toml", environ={})
    hints.append(missing.value.hint)
    assert "cp config.example.toml" in missing.value.hint
    bad = write(tmp_path, "[octopus\napi_key = 1\n")
    with pytest.raises(ConfigError) as syntax:
        load_settings(bad, environ={})
    hints.append(syntax.value.hint)
    assert "double quotes" in syntax.value.hint
    secret = tmp_path / "no-such-secret"
    with pytest.raises(ConfigError) as unreadable:
        load_settings(None, environ={"IOAGENT_OCTOPUS__API_KEY_FILE": str(secret)})
    hints.append(unreadable.value.hint)
    assert "IOAGENT_OCTOPUS__API_KEY_FILE" in str(unreadable.value)
    assert "does not exist" in str(unreadable.value)
    directory = tmp_path / "a-directory"
    directory.mkdir()
    with pytest.raises(ConfigError) as unreadable_dir:
        load_settings(None, environ={"IOAGENT_OCTOPUS__API_KEY_FILE": str(directory)})
    hints.append(unreadable_dir.value.hint)
    assert "readable" in unreadable_dir.value.hint
    with pytest.raises(ConfigError) as invalid:
        load_settings(write(tmp_path, "[octopus]\napi_key = 'hello'\n"), environ={})
    hints.append(invalid.value.hint)
    assert len(set(hints)) == len(hints), hints
    assert "compare with config.example.toml" in invalid.value.hint
    assert invalid.value.report().endswith("hint: " + invalid.value.hint)


def test_a_single_underscore_variable_is_reported_as_ignored() -> None:
    environ = {
        "IOAGENT_MQTT_PORT": "1884",
        "IOAGENT_MQTT__HOST": "broker",
        "IOAGENT_CONFIG": "config.toml",
        "IOAGENT_OCTOPUS_API_KEY_FILE": "/run/secrets/key",
        "IOAGENT_SETUP_NODE": "0",
        "IOAGENT_VERBOSE": "1",
        "HOME": "/root",
    }
    warnings = ignored_environment(environ)
    assert len(warnings) == 3, warnings
    verbose = next(w for w in warnings if "IOAGENT_VERBOSE" in w)
    assert "IOAGENT_<SECTION>__<KEY>" in verbose
    port = next(w for w in warnings if "IOAGENT_MQTT_PORT " in w)
    assert port.endswith("did you mean IOAGENT_MQTT__PORT?")
    key = next(w for w in warnings if "IOAGENT_OCTOPUS_API_KEY_FILE" in w)
    assert key.endswith("did you mean IOAGENT_OCTOPUS__API_KEY_FILE?")
    # And it really is ignored: the port stays the default.
    plain = {name: value for name, value in environ.items() if name.startswith("IOAGENT_MQTT")}
    settings = load_settings(None, environ={**plain, "IOAGENT_OCTOPUS__API_KEY": REAL_LOOKING_KEY})
    assert settings.mqtt.port == 1883


def test_relative_paths_in_the_file_are_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc" / "ioagent"
    folder.mkdir(parents=True)
    path = folder / "config.toml"
    path.write_text(
        f'[octopus]\napi_key = "{REAL_LOOKING_KEY}"\n'
        '[storage]\npath = "state/ioagent.db"\n'
        '[mqtt.tls]\nenabled = true\nca_file = "ca.crt"\ncertfile = "/abs/client.crt"\n'
        '[victron.tls]\nkeyfile = "../gx.key"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # A relative --config too: what counts is where the file is, not where we stand.
    settings = load_settings(Path("..") / "etc" / "ioagent" / "config.toml", environ={})
    assert settings.storage.path.resolve() == folder / "state" / "ioagent.db"
    assert settings.mqtt.tls.ca_file is not None
    assert settings.mqtt.tls.ca_file.resolve() == folder / "ca.crt"
    assert settings.mqtt.tls.certfile == Path("/abs/client.crt")
    assert settings.victron.tls.keyfile is not None
    assert settings.victron.tls.keyfile.resolve() == tmp_path / "etc" / "gx.key"


def test_the_default_database_sits_next_to_the_config_file_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, f'[octopus]\napi_key = "{REAL_LOOKING_KEY}"\n')
    monkeypatch.chdir("/")
    assert load_settings(path, environ={}).storage.path == tmp_path / "data" / "ioagent.db"
    env = {"IOAGENT_STORAGE__PATH": "rel/ioagent.db"}
    assert load_settings(path, environ=env).storage.path == Path("rel/ioagent.db")
    # Without a config file there is nothing to anchor to: the working directory, as before.
    bare = load_settings(None, environ={"IOAGENT_OCTOPUS__API_KEY": REAL_LOOKING_KEY})
    assert bare.storage.path == Path("data/ioagent.db")


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


def test_every_key_in_the_readmes_table_is_a_real_key() -> None:
    # Rows name a key as `section.key`, with siblings after a slash: `tariff.a` / `b`.
    known = set(field_paths(Settings))
    named: list[str] = []
    for row in (ROOT / "README.md").read_text().splitlines():
        first = row.split("|")[1].strip() if row.startswith("| `") else ""
        keys = re.findall(r"`([a-z_.]+)`", first)
        if keys and "." in keys[0]:
            section = keys[0].rsplit(".", 1)[0]
            named += [keys[0], *(f"{section}.{key}" for key in keys[1:])]
    assert len(named) >= 20, "the README's config table was not found"
    assert [key for key in named if key not in known] == []


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
    path = write(
        tmp_path, '[octopus]\napi_key = "sk_live_FAKEabcdefghijkl0001"\n[mqtt]\nhots = "broker"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "mqtt.hots" in str(info.value)
    assert str(path) in str(info.value)
    assert "not a known setting" in str(info.value)


def test_invalid_value_points_at_key_and_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path, '[octopus]\napi_key = "sk_live_FAKEabcdefghijkl0001"\n')
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
    path = write(
        tmp_path, '[octopus]\napi_key = "sk_live_FAKEfromTheConfig0001"\n[mqtt]\nport = 1883\n'
    )
    settings = load_settings(
        path,
        environ={"IOAGENT_MQTT__PORT": "2883", "IOAGENT_OCTOPUS__ACCOUNT_NUMBER": "A-0000000A"},
    )
    assert settings.mqtt.port == 2883
    assert settings.octopus.account_number == "A-0000000A"
    assert settings.octopus.api_key.get_secret_value() == "sk_live_FAKEfromTheConfig0001"


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[octopus]\napi_key = "sk_live_FAKEfromTheEnvPath001"\n')
    settings = load_settings(None, environ={"IOAGENT_CONFIG": str(path)})
    assert settings.octopus.api_key.get_secret_value() == "sk_live_FAKEfromTheEnvPath001"


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "octopus_api_key"
    secret.write_text("sk_live_FAKEfromASecret00001\n")
    settings = load_settings(None, environ={"IOAGENT_OCTOPUS__API_KEY_FILE": str(secret)})
    assert settings.octopus.api_key.get_secret_value() == "sk_live_FAKEfromASecret00001"


def test_secrets_are_not_in_repr_or_errors(tmp_path: Path) -> None:
    key = "sk_live_FAKEsecretShouldNotShow01"
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
    path = write(tmp_path, '[octopus]\napi_key = "sk_live_FAKEabcdefghijkl0001"\n' + toml)
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_settings(path, environ={})
