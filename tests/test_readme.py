"""The README's first screen: exactly the two commands, and CI runs the test one."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRST_SCREEN_LINES = 30


def code_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(line number of the opening fence, the block's lines) for each fenced block."""
    blocks: list[tuple[int, list[str]]] = []
    opened: int | None = None
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            if opened is None:
                opened, body = number, []
            else:
                blocks.append((opened, body))
                opened = None
        elif opened is not None:
            body.append(line)
    return blocks


def commands(block: list[str]) -> list[str]:
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block if line.strip()]


def test_the_first_screen_has_exactly_the_demo_and_the_test_command() -> None:
    blocks = code_blocks((REPO / "README.md").read_text())
    on_first_screen = [body for start, body in blocks if start <= FIRST_SCREEN_LINES]
    assert len(on_first_screen) == 1, "one code block on the first screen"
    assert commands(on_first_screen[0]) == ["./scripts/demo", "./scripts/test"]
    for script in ("scripts/demo", "scripts/test"):
        assert os.access(REPO / script, os.X_OK), f"{script} is not executable"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".ci/run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[-1] == "exec scripts/test"
    assert not [line for line in lines[:-1] if "pytest" in line or "scripts/" in line]
