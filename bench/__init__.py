"""Benchmarks for ioagent: ``./scripts/bench`` (or ``python -m bench``) writes docs/benchmarks.md.

Each module measures one group of figures and returns plain JSON-ready dicts; ``bench.report``
turns them into the Markdown page. Nothing here runs in the normal test suite except the smoke
test in tests/test_bench_smoke.py, which runs the harness functions on tiny inputs.
"""
