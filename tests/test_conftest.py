"""The suite's own plumbing (tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.conftest import is_soak


def test_a_directory_named_soak_does_not_make_a_test_a_soak_test(
    request: pytest.FixtureRequest,
) -> None:
    node = request.node
    # pytest puts every directory name of the path into the keywords, e.g. "tests".
    assert "tests" in node.keywords
    assert not is_soak(node)
    node.keywords["soak"] = True  # what a checkout under /work/soak/ looks like
    assert not is_soak(node), "only the soak marker makes a soak test"


@pytest.mark.soak
def test_the_soak_marker_makes_a_soak_test(request: pytest.FixtureRequest) -> None:
    assert is_soak(request.node)
