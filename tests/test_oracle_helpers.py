"""The comparison every oracle test goes through (conftest.assert_close) must be able to fail:
before 2026-12-06 a NaN anywhere made its max-abs error NaN, and ``NaN > tol`` is False, so a
kernel that wrote NaN where the oracle has a number passed."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_close

NAN, INF = math.nan, math.inf


def test_assert_close_accepts_matching_specials_and_rounding():
    assert_close(
        torch.tensor([NAN, INF, -INF, 1.0]), torch.tensor([NAN, INF, -INF, 1.0 + 1e-13]), 1e-12
    )


@pytest.mark.parametrize(
    "actual, expected",
    [([NAN], [1.0]), ([1.0], [NAN]), ([INF], [1.0]), ([-INF], [INF]), ([1.0], [INF]),
     ([1.0, NAN], [1.0, 2.0]), ([1.1], [1.0])],
)  # fmt: skip
def test_assert_close_rejects(actual, expected):
    with pytest.raises(AssertionError):
        assert_close(torch.tensor(actual), torch.tensor(expected), 1e-9, "case")


def test_assert_close_scale_ignores_non_finite_expected():
    """The tolerance scales with the largest finite |expected|, not with an infinity in it."""
    with pytest.raises(AssertionError):
        assert_close(torch.tensor([INF, 1.5]), torch.tensor([INF, 1.0]), 1e-3)
