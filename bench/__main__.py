"""``python -m bench [--quick] [--only P1,P4] [--json PATH] [--doc PATH]``: run and report."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import accounts, commands, live, policy, process, report
from bench.env import mosquitto, quiet_logs
from bench.stats import machine

REPO = Path(__file__).resolve().parent.parent
GROUPS = ("P1", "P23", "P4", "P5", "P6", "P7")
"""P23 (the policy simulation) is P2 and P3; the real-time check of it runs with P1."""


def _say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run_all(quick: bool, only: set[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if "P23" in only:
        _say("P2/P3: poll policy on a simulated clock")
        results["p23_policy"] = asyncio.run(policy.policy_figures(samples=500 if quick else 2000))
    if "P5" in only:
        _say("P5: cold starts")
        results["p5"] = asyncio.run(process.cold_starts(2 if quick else 5))
    if "P7" in only:
        _say("P7: command overhead")
        rounds = 3 if quick else 15
        results["p7"] = {
            "stock": asyncio.run(commands.command_overhead(rounds)),
            "broker_nodelay": asyncio.run(commands.command_overhead(rounds, broker_nodelay=True)),
        }
    if "P4" in only:
        _say("P4: steady RSS and CPU")
        results["p4"] = asyncio.run(
            process.steady_state(150 if quick else 600, 5.0 if quick else 30.0)
        )
    if "P6" in only:
        sizes = [1, 100] if quick else [1, 100, 1000]
        _say(f"P6: accounts {sizes}")
        with (
            tempfile.TemporaryDirectory(prefix="ioagent-bench-") as tmp,
            mosquitto(Path(tmp)) as broker,
        ):
            results["p6"] = accounts.many_accounts(sizes, broker.host, broker.port)
    if "P1" in only:
        config = live.QUICK if quick else live.LiveConfig()
        _say(f"P1: {config.slots * 2} boundaries, about {config.duration_seconds:.0f} s")
        results["p1_live"] = asyncio.run(live.run_live(config))
        aligned = live.QUICK_ALIGNED if quick else live.AlignedConfig()
        _say(f"P1: windows {', '.join(aligned.kinds)} on :00/:30 boundaries (jumping clock)")
        results["p1_aligned"] = asyncio.run(live.run_aligned(aligned))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller N, about 3 minutes")
    parser.add_argument(
        "--only", default=",".join(GROUPS), help="comma list of " + ",".join(GROUPS)
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument(
        "--doc", type=Path, default=REPO / "docs" / "benchmarks.md", help="Markdown to write"
    )
    parser.add_argument(
        "--render", type=Path, default=None, help="only re-render --doc from a saved --json file"
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        args.doc.write_text(report.render(json.loads(args.render.read_text())))
        return 0
    only = {part.strip().upper() for part in args.only.split(",") if part.strip()}
    quiet_logs()
    started = time.monotonic()
    results = run_all(args.quick, only)
    results |= {
        "machine": machine(),
        "quick": args.quick,
        "command": "./scripts/bench --quick" if args.quick else "./scripts/bench",
        "elapsed_s": time.monotonic() - started,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if only >= set(GROUPS):
        args.doc.write_text(report.render(results))
        _say(f"wrote {args.doc}")
    else:
        print(json.dumps(results, indent=2, default=str))
    for pid, _target, measured, met in report.verdicts(results) if only >= set(GROUPS) else []:
        _say(f"{pid}: {measured} ({'met' if met else 'MISSED'})")
    _say(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
