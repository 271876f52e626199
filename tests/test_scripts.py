"""The set-up scripts: the runtime without the dev tools, a real install on the PATH, and a
busy apt that is waited for rather than failed on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APT_LIB = ROOT / "scripts" / "lib" / "apt.sh"
LOCK_ERROR = (
    "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)\n"
    "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another "
    "process using it?"
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="apt_get would go through sudo")


def fake_apt_get(tmp_path: Path, busy_times: int, other_error: bool = False) -> Path:
    """An apt-get that reports dpkg's lock as held ``busy_times`` times, then works."""
    counter = tmp_path / "calls"
    counter.write_text("0")
    fake = tmp_path / "apt-get"
    failure = "echo 'E: Unable to locate package nosuch' >&2; exit 100" if other_error else ""
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f"n=$(($(cat {counter}) + 1)); echo $n > {counter}\n"
        f"{failure}\n"
        f"if [ $n -le {busy_times} ]; then printf '%s\\n' \"{LOCK_ERROR}\" >&2; exit 100; fi\n"
        'echo "installed $*"\n'
    )
    fake.chmod(0o755)
    return fake


def run_apt_get(fake: Path, wait: int) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "APT_GET": str(fake),
        "IOAGENT_APT_WAIT": str(wait),
        "IOAGENT_APT_POLL": "1",
    }
    return subprocess.run(
        ["bash", "-c", f'. "{APT_LIB}" && apt_get install -y mosquitto'],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@needs_root
def test_a_busy_apt_is_waited_for_with_a_message(tmp_path: Path) -> None:
    fake = fake_apt_get(tmp_path, busy_times=2)
    result = run_apt_get(fake, wait=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "installed install -y mosquitto"
    assert result.stderr.count("apt is busy") == 1, result.stderr
    assert (tmp_path / "calls").read_text().strip() == "3"


@needs_root
def test_apt_busy_for_too_long_gives_up_with_apts_own_message(tmp_path: Path) -> None:
    fake = fake_apt_get(tmp_path, busy_times=1000)
    result = run_apt_get(fake, wait=2)
    assert result.returncode == 100
    assert "Could not get lock" in result.stderr
    assert "apt was still busy after 2 s" in result.stderr


@needs_root
def test_another_apt_failure_is_not_waited_on(tmp_path: Path) -> None:
    fake = fake_apt_get(tmp_path, busy_times=0, other_error=True)
    result = run_apt_get(fake, wait=30)
    assert result.returncode == 100
    assert "Unable to locate package" in result.stderr
    assert "apt is busy" not in result.stderr
    assert (tmp_path / "calls").read_text().strip() == "1"


def test_the_test_command_installs_its_own_tools_and_ci_runs_it() -> None:
    test_script = (ROOT / "scripts" / "test").read_text()
    assert "scripts/setup --dev\n" in test_script
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("exec scripts/test")
    demo = (ROOT / "scripts" / "demo").read_text()
    assert "scripts/setup\n" in demo and "--dev" not in demo


def _copy_checkout(target: Path) -> Path:
    checkout = target / "ioagent-checkout"
    for name in ("pyproject.toml", "README.md", "ioagent", "scripts"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            checkout.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, checkout / name)
    return checkout


def test_setup_installs_the_runtime_without_the_dev_tools(tmp_path: Path) -> None:
    checkout = _copy_checkout(tmp_path)
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        ["scripts/setup"], cwd=checkout, capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    python = checkout / ".venv" / "bin" / "python"
    assert subprocess.run([python, "-c", "import ioagent.demo"], check=False).returncode == 0
    for tool in ("pytest", "mypy", "ruff", "hypothesis"):
        found = subprocess.run([python, "-c", f"import {tool}"], capture_output=True, check=False)
        assert found.returncode != 0, f"{tool} is a dev tool; scripts/setup must not install it"


def test_install_puts_a_working_ioagent_on_the_path(tmp_path: Path) -> None:
    checkout = _copy_checkout(tmp_path)
    bin_dir = tmp_path / "bin"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "IOAGENT_INSTALL_DIR": str(tmp_path / "opt"),
        "IOAGENT_BIN_DIR": str(bin_dir),
    }
    result = subprocess.run(
        ["scripts/install"], cwd=checkout, capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"as {bin_dir}/ioagent" in result.stdout
    assert f"{bin_dir} is not on your PATH" in result.stdout
    # A bare `ioagent`, as every doc writes it, from anywhere: the checkout may go away.
    shutil.rmtree(checkout)
    path = f"{bin_dir}:{os.environ['PATH']}"
    help_text = subprocess.run(
        ["ioagent", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path},
        timeout=60,
        check=False,
    )
    assert help_text.returncode == 0, help_text.stderr
    assert "Intelligent Octopus Go" in help_text.stdout
    venv_python = tmp_path / "opt" / "venv" / "bin" / "python"
    found = subprocess.run([venv_python, "-c", "import pytest"], capture_output=True, check=False)
    assert found.returncode != 0, "a real install carries no test tools"
