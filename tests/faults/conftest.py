"""Fixtures of the fault suite."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.broker import Broker
from tests.canary import secret


def run_as_root_option() -> list[str]:
    """As root, Mosquitto drops to user "mosquitto", who cannot write to pytest's private
    temp dirs (its log, a password file): keep it root there."""
    return ["user root"] if os.geteuid() == 0 else []


@pytest.fixture
def logged_broker(tmp_path: Path) -> Iterator[Broker]:
    """Like ``broker``, but Mosquitto can write its log, so tests can read what it saw."""
    instance = Broker(workdir=tmp_path / "mosquitto", extra_config=run_as_root_option())
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


IOAGENT_USER = "ioagent"
IOAGENT_PASSWORD = secret("pw-CANARY-93ab")
OBSERVER_USER = "homeassistant"
OBSERVER_PASSWORD = secret("observer-pass-41c7")
ACL = """\
user ioagent
topic readwrite ioagent/#
topic readwrite homeassistant/#

user homeassistant
topic read ioagent/#
topic read homeassistant/#
topic write ioagent/+/set/+
topic write ioagent/+/refresh
topic readwrite faults/#
"""


@dataclass
class SecuredBroker:
    """A TLS-only Mosquitto with a password file and an ACL."""

    broker: Broker
    ca_file: Path
    password_file: Path

    def observer_options(self) -> dict[str, Any]:
        """aiomqtt.Client options for the read-mostly ``homeassistant`` user."""
        return {
            "username": OBSERVER_USER,
            "password": OBSERVER_PASSWORD,
            "tls_params": aiomqtt.TLSParameters(ca_certs=str(self.ca_file)),
        }

    def set_passwords(self, users: dict[str, str]) -> None:
        first = True
        for user, password in users.items():
            create = ["-c"] if first else []
            subprocess.run(
                ["mosquitto_passwd", "-b", *create, str(self.password_file), user, password],
                check=True,
                capture_output=True,
            )
            first = False
        self.password_file.chmod(0o600)


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate valid for 127.0.0.1 and localhost."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    extensions = directory / "san.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        ["openssl", "req", "-x509", *ec, "-days", "2", "-keyout", ca_key, "-out", ca_cert,
         "-subj", "/CN=ioagent test CA"],
        ["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
         "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", extensions],
    ]  # fmt: skip
    for command in commands:
        subprocess.run([str(part) for part in command], check=True, capture_output=True)
    return ca_cert, cert, key


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[SecuredBroker]:
    workdir = tmp_path / "secured"
    workdir.mkdir()
    ca_cert, cert, key = make_certificates(workdir / "certs")
    acl = workdir / "acl"
    acl.write_text(ACL)
    secured = SecuredBroker(
        Broker(
            workdir=workdir / "mosquitto",
            listener_options=[f"cafile {ca_cert}", f"certfile {cert}", f"keyfile {key}"],
            extra_config=[
                "allow_anonymous false",
                f"password_file {workdir / 'passwords'}",
                f"acl_file {acl}",
                *run_as_root_option(),
            ],
        ),
        ca_cert,
        workdir / "passwords",
    )
    secured.set_passwords({IOAGENT_USER: IOAGENT_PASSWORD, OBSERVER_USER: OBSERVER_PASSWORD})
    secured.broker.start()
    try:
        yield secured
    finally:
        secured.broker.stop()
