"""The test harness's own hooks (tests/conftest.py): the session order, pytest-xdist's
dispatch and OpenMP's wait policy. Each check fails if its hook is dropped or its rule inverted."""

from __future__ import annotations

import os
import types

import conftest
import pytest


class _Item:
    def __init__(self, name: str, slow: dict | None = None):
        self.name, self.slow = name, slow

    def get_closest_marker(self, name: str):
        if name != "slow" or self.slow is None:
            return None
        return pytest.mark.slow(**self.slow).mark


def test_slow_tests_first_in_the_session_longest_first():
    items = [
        _Item("a"),
        _Item("b", {"seconds": 40}),
        _Item("c"),
        _Item("d", {"seconds": 300}),
        _Item("e", {"seconds": 40}),
        _Item("f", {}),
    ]
    conftest.pytest_collection_modifyitems(None, items)
    assert [i.name for i in items] == ["f", "d", "b", "e", "a", "c"]


@pytest.mark.parametrize("given, sent", [(None, 1), (5, 5)])
def test_xdist_load_mode_sends_one_test_at_a_time_unless_told(given, sent):
    config = types.SimpleNamespace(option=types.SimpleNamespace(maxschedchunk=given))
    conftest.pytest_configure(config)
    assert config.option.maxschedchunk == sent


def test_without_xdist_no_option_is_added():
    config = types.SimpleNamespace(option=types.SimpleNamespace())
    conftest.pytest_configure(config)
    assert not hasattr(config.option, "maxschedchunk")


@pytest.mark.skipif(not os.environ.get("PYTEST_XDIST_WORKER"), reason="not an xdist worker")
def test_this_run_dispatches_one_test_at_a_time(pytestconfig):
    assert pytestconfig.getoption("maxschedchunk") == 1 or "--maxschedchunk" in " ".join(
        map(str, pytestconfig.invocation_params.args)
    )


@pytest.mark.skipif(not os.environ.get("PYTEST_XDIST_WORKER"), reason="not an xdist worker")
@pytest.mark.skipif(conftest.OMP_WAIT_POLICY_GIVEN is not None, reason="OMP_WAIT_POLICY given")
def test_openmp_threads_wait_passively_in_xdist_workers():
    assert os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"
