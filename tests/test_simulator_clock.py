"""The simulator's clock may run ahead of the wall clock (demos, tests that travel in time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ioagent.simulator.state import DEFAULT_ACCOUNT, DEFAULT_API_KEY, SimulatorState


def test_tokens_issued_by_a_clock_ahead_of_real_time_are_accepted() -> None:
    ahead = datetime.now(UTC) + timedelta(days=1)
    state = SimulatorState.with_default_account(clock=lambda: ahead)
    grant = state.obtain_token_with_key(DEFAULT_API_KEY)
    assert state.authenticate(grant.token) == DEFAULT_ACCOUNT


def test_time_offset_does_not_invalidate_fresh_tokens() -> None:
    state = SimulatorState.with_default_account(clock=lambda: datetime.now(UTC))
    state.set_time_offset(3 * 3600)
    grant = state.obtain_token_with_key(DEFAULT_API_KEY)
    assert state.authenticate(f"JWT {grant.token}") == DEFAULT_ACCOUNT
