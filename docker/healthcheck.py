"""Docker HEALTHCHECK: healthy while the daemon's heartbeat file is fresh.

The daemon rewrites ``<directory of storage.path>/heartbeat`` with an ISO-8601 UTC time every
15 s while it runs. This script exits 0 when that time is at most ``--max-age`` seconds away from
now, and 1 when the file is missing, unreadable, not a time, or stale (a hung or stopped daemon).

Standard library only, and no ioagent import: it runs every 30 s on a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_STORAGE_PATH = "/data/ioagent.db"
DEFAULT_MAX_AGE = 90.0


def heartbeat_file(environ: dict[str, str]) -> Path:
    storage = environ.get("IOAGENT_STORAGE__PATH") or DEFAULT_STORAGE_PATH
    return Path(storage).parent / "heartbeat"


def heartbeat_problem(text: str | None, now: datetime, max_age: float) -> str | None:
    """Why the heartbeat ``text`` (None: no file) is unhealthy at ``now``; None when healthy."""
    if text is None:
        return "no heartbeat file yet"
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return f"heartbeat is not a time: {text.strip()[:40]!r}"
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    age = (now - stamp).total_seconds()
    # A stamp far in the future means the clock was set back; the next beat corrects it.
    if abs(age) > max_age:
        return f"heartbeat is {age:.0f} s old (limit {max_age:.0f} s)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=None, help="heartbeat file to read")
    parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE, help="seconds")
    args = parser.parse_args(argv)
    path = args.file or heartbeat_file(dict(os.environ))
    try:
        text: str | None = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeDecodeError) as exc:
        print(f"unhealthy: cannot read {path}: {exc}")
        return 1
    problem = heartbeat_problem(text, datetime.now(UTC), args.max_age)
    if problem is not None:
        print(f"unhealthy: {problem} ({path})")
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
