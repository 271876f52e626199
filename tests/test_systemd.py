"""examples/ioagent.service: a valid unit that runs what scripts/install installs, as
docs/systemd.md describes it."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ioagent.check import EXIT_CONFIG

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "examples" / "ioagent.service"
DOC = ROOT / "docs" / "systemd.md"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment]
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def test_the_unit_runs_the_installed_command_with_the_documented_config() -> None:
    service = unit()["Service"]
    binary, *args = service["ExecStart"].split()
    install = (ROOT / "scripts" / "install").read_text(encoding="utf-8")
    root_bin = re.search(r'bin_dir="\$\{IOAGENT_BIN_DIR:-([^}]+)\}"', install)
    assert root_bin is not None
    assert binary == f"{root_bin.group(1)}/ioagent", "as root, scripts/install puts it there"
    assert args == ["run", "--config", "/etc/ioagent/config.toml"]
    doc = DOC.read_text(encoding="utf-8")
    assert "sudo cp config.example.toml /etc/ioagent/config.toml" in doc
    # The database must be where the service may write: its StateDirectory.
    state = f"/var/lib/{service['StateDirectory']}/"
    assert f'path = "{state}ioagent.db"' in doc
    assert service["ProtectSystem"] == "strict"
    assert service["RestartPreventExitStatus"] == str(EXIT_CONFIG)
    assert service["User"] == "ioagent"
    assert "adduser --system --group --no-create-home ioagent" in doc


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # The same unit with a command that exists here: verify checks every other line.
    text = UNIT.read_text(encoding="utf-8").replace("/usr/local/bin/ioagent", "/bin/true")
    copy = tmp_path / "ioagent.service"
    copy.write_text(text, encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr
