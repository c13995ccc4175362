"""``perception.gan_health``: a generator that collapsed or drifted away from the real DEMs is named, with why; a
weak but healthy one (a first update, a metric or two the wrong way) is not."""

from __future__ import annotations

import pytest

from perception.gan_health import COLLAPSE_MARGIN, generator_failure

METRICS = ("nan_map", "nan_fraction", "height", "sliced_wasserstein", "classifier")


@pytest.mark.parametrize("nan_share, closed", [
    (0.06, dict(zip(METRICS, (0.27, 0.27, 0.16, 0.33, 0.02), strict=True))),  # a first update: little closed
    (0.056, dict(zip(METRICS, (0.38, 0.30, -1.51, 0.20, 0.01), strict=True))),  # heights the wrong way, the rest not
    (0.0, dict.fromkeys(METRICS, 0.0)),  # the identity itself
    (0.1, dict.fromkeys(METRICS)),  # no metric with a baseline: nothing to judge drift by
])
def test_healthy_generators_pass(nan_share, closed):
    assert generator_failure(nan_share, 0.12, closed) is None


def test_a_generator_hiding_most_cells_has_collapsed():
    bound = 2 * 0.12 + COLLAPSE_MARGIN
    assert generator_failure(bound - 0.01, 0.12, dict.fromkeys(METRICS, 0.3)) is None
    why = generator_failure(0.9, 0.12, dict.fromkeys(METRICS, 0.3))
    assert why == "collapsed: G hides 90 % of the held-out cells, the real DEMs 12 % (bound 44 %)"
    assert generator_failure(1.0, 0.12, None).startswith("collapsed: G hides 100 %")  # no metric at all


def test_a_generator_farther_from_real_than_the_identity_on_every_metric_has_drifted():
    closed = dict(zip(METRICS, (-0.3, -0.8, -2.0, -0.5, None), strict=True))
    why = generator_failure(0.1, 0.12, closed)
    assert why.startswith("drifted away from the real DEMs") and "height -2.00" in why and "classifier" not in why
    assert generator_failure(0.1, 0.12, {**closed, "nan_map": -0.2}) is None  # one metric within the bound
