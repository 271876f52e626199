"""The import rules of the layout (docs/architecture.md), read from the source with ``ast``.

The tree shows the pipeline kraken → tariff → runtime → mqtt / victron, with the store beside
it. These rules keep it that way: a forbidden import anywhere under ``ioagent/``, at module
level or inside a function, fails here with the file, the line and the rule it breaks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "ioagent"

PURE_CORE = ("ioagent.tariff", "ioagent.victron.slots", "ioagent.mqtt.commands",
             "ioagent.mqtt.homeassistant", "ioagent.ledger")  # fmt: skip
"""Decisions as pure functions: no I/O library, no store, no runtime."""
PURE_CORE_FORBIDDEN = ("aiohttp", "aiomqtt", "paho", "apscheduler", "sqlite3", "ioagent.store",
                       "ioagent.runtime",
                       # ioagent's own edges: the Kraken client and its transport, the REST rates,
                       # the MQTT bridge and publisher, the GX connector
                       "ioagent.kraken.client", "ioagent.kraken.transport", "ioagent.kraken.tokens",
                       "ioagent.kraken.rest", "ioagent.mqtt.bridge", "ioagent.mqtt.publisher",
                       "ioagent.victron.connector")  # fmt: skip
KRAKEN_FORBIDDEN = ("ioagent.mqtt", "ioagent.victron", "ioagent.store", "ioagent.runtime")
VICTRON_FORBIDDEN = ("ioagent.kraken",)
SIMULATOR_USERS = ("ioagent.demo", "ioagent.simulator")


@dataclass(frozen=True)
class Import:
    module: str
    """The importing module, dotted (``ioagent.mqtt.bridge``)."""
    target: str
    """The imported module, dotted and absolute."""
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path.relative_to(PACKAGE_ROOT.parent)}:{self.line}"


def module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, path: Path, *, is_package: bool = False) -> list[Import]:
    """Every import in ``source``, relative ones resolved against ``module``."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, path, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append(Import(module, target, path, node.lineno))
            # ``from ioagent import store`` imports the submodule ``ioagent.store``.
            found += [
                Import(module, f"{target}.{alias.name}", path, node.lineno)
                for alias in node.names
                if (PACKAGE_ROOT.parent / f"{target}.{alias.name}".replace(".", "/")).is_dir()
                or (
                    PACKAGE_ROOT.parent / (f"{target}.{alias.name}".replace(".", "/") + ".py")
                ).is_file()
            ]
    return found


def all_imports(root: Path = PACKAGE_ROOT) -> list[Import]:
    found: list[Import] = []
    for path in sorted(root.rglob("*.py")):
        found += imports_of(
            path.read_text(encoding="utf-8"),
            module_name(path, root),
            path,
            is_package=path.name == "__init__.py",
        )
    return found


def within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def rule_violations(imports: Iterable[Import]) -> Iterator[str]:
    for imp in imports:
        if within(imp.module, PURE_CORE) and within(imp.target, PURE_CORE_FORBIDDEN):
            yield f"{imp.where()}: pure core {imp.module} imports {imp.target}"
        if within(imp.module, ("ioagent.kraken",)) and within(imp.target, KRAKEN_FORBIDDEN):
            yield f"{imp.where()}: kraken/ must not import {imp.target}"
        if within(imp.module, ("ioagent.victron",)) and within(imp.target, VICTRON_FORBIDDEN):
            yield f"{imp.where()}: victron/ must not import {imp.target}"
        if within(imp.target, ("ioagent.simulator",)) and not within(imp.module, SIMULATOR_USERS):
            yield f"{imp.where()}: only ioagent/demo.py may import the simulator"


def unit_of(module: str) -> str:
    """The unit of the cycle rule: a package under ``ioagent/`` or a top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def package_cycles(imports: Iterable[Import]) -> list[list[str]]:
    """Cycles in the graph of units (each a list that starts and ends at the same unit)."""
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if not within(imp.target, ("ioagent",)):
            continue
        source, target = unit_of(imp.module), unit_of(imp.target)
        if source != target and target != "ioagent":
            edges.setdefault(source, set()).add(target)
    cycles: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    return cycles


def test_the_tree_has_the_pipeline_packages() -> None:
    packages = {p.name for p in PACKAGE_ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert {"kraken", "tariff", "runtime", "mqtt", "victron", "store", "simulator"} <= packages


def test_the_import_rules_hold() -> None:
    imports = all_imports()
    assert len(imports) > 100, "the scan found too few imports to be reading the tree"
    assert list(rule_violations(imports)) == []


def test_there_are_no_import_cycles_between_packages() -> None:
    assert package_cycles(all_imports()) == []


FAKE = PACKAGE_ROOT / "fake.py"


@pytest.mark.parametrize(
    ("module", "source", "rule"),
    [
        ("ioagent.tariff.rules", "import aiohttp\n", "pure core"),
        ("ioagent.tariff.plan", "def f():\n    from ioagent.store import database\n", "pure core"),
        ("ioagent.mqtt.commands", "from ioagent.runtime.agent import AccountAgent\n", "pure core"),
        ("ioagent.victron.slots", "import aiomqtt\n", "pure core"),
        ("ioagent.mqtt.homeassistant", "from apscheduler import x\n", "pure core"),
        ("ioagent.kraken.client", "from ioagent.mqtt.topics import Topics\n", "kraken/"),
        ("ioagent.kraken.cli", "from ioagent.store.database import Store\n", "kraken/"),
        ("ioagent.victron.connector", "from ioagent.kraken import types\n", "victron/"),
        ("ioagent.runtime.daemon", "from ioagent.simulator.state import X\n", "simulator"),
        ("ioagent.tariff.rules", "from .. import runtime\n", "pure core"),
        ("ioagent.tariff.product", "from ioagent.kraken.client import KrakenClient\n", "pure core"),
        ("ioagent.ledger.summary", "from ioagent.mqtt.bridge import MqttBridge\n", "pure core"),
        ("ioagent.tariff.signals", "from ioagent.mqtt import publisher\n", "pure core"),
    ],
)
def test_each_rule_catches_a_forbidden_import(module: str, source: str, rule: str) -> None:
    found = list(rule_violations(imports_of(source, module, FAKE)))
    assert len(found) >= 1 and rule in found[0], found


def test_allowed_imports_are_not_flagged() -> None:
    allowed = [
        ("ioagent.tariff.rules", "from ioagent.kraken.types import Dispatch\n"),
        ("ioagent.demo", "from ioagent.simulator.server import run_simulator\n"),
        ("ioagent.runtime.daemon", "import aiomqtt\nfrom ioagent.store import async_store\n"),
        ("ioagent.victron.connector", "from ioagent.mqtt.bridge import x\n"),
    ]
    for module, source in allowed:
        assert list(rule_violations(imports_of(source, module, FAKE))) == [], module


def test_a_cycle_between_packages_is_found() -> None:
    fake = [
        Import("ioagent.mqtt.bridge", "ioagent.runtime.agent", FAKE, 1),
        Import("ioagent.runtime.agent", "ioagent.mqtt.topics", FAKE, 1),
        Import("ioagent.runtime.agent", "ioagent.kraken.types", FAKE, 1),
    ]
    assert package_cycles(fake) == [["ioagent.mqtt", "ioagent.runtime", "ioagent.mqtt"]]


def wait_for_calls(source: str) -> list[int]:
    """Lines that call ``asyncio.wait_for`` (3.11's can lose a cancellation: ioagent/aio.py)."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and node.attr == "wait_for"
        and isinstance(node.value, ast.Name)
        and node.value.id == "asyncio"
    ]


def test_nothing_in_ioagent_uses_asyncio_wait_for() -> None:
    found = [
        f"{path.relative_to(PACKAGE_ROOT.parent)}:{line}"
        for path in sorted(PACKAGE_ROOT.rglob("*.py"))
        for line in wait_for_calls(path.read_text(encoding="utf-8"))
        if path.name != "aio.py"
    ]
    assert found == [], "use ioagent.aio.wait_event or asyncio.timeout instead"


def test_the_wait_for_rule_sees_a_call() -> None:
    assert wait_for_calls(
        "import asyncio\nasync def f(e):\n    await asyncio.wait_for(e, 1)\n"
    ) == [3]
    assert wait_for_calls("async def f(c):\n    await c.wait_for(lambda: True)\n") == []
