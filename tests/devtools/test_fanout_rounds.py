"""The fan-out row's figures: each size's median round, so one slow start does not decide the ratio."""

from __future__ import annotations

from devtools.bench.core import Measurement
from devtools.bench.scale import TARGET_FANOUT_RATIO, fanout_checks, median_round


def result(seconds: float) -> dict[str, float]:
    return {"promotion_seconds": seconds, "promotion_tasks": 1, "promotion_task_seconds_median": seconds}


def test_the_median_round_is_the_middle_one_and_keeps_every_round():
    chosen = median_round([result(0.9), result(0.5), result(0.6)])
    assert chosen["promotion_seconds"] == 0.6
    assert chosen["rounds_seconds"] == [0.9, 0.5, 0.6]
    assert median_round([result(2.0), result(1.0)])["promotion_seconds"] == 1.0  # lower middle


def test_the_ratio_is_of_the_medians():  # and the row says which rounds they are
    m = Measurement("scale", "Scale of work")
    fanout = {
        1: median_round([result(0.9), result(0.5), result(0.6)]),
        50: median_round([result(1.7), result(2.4), result(1.9)]),
    }
    fanout_checks(m, fanout)
    fifty = next(c for c in m.checks if "50 endpoint" in c.case)
    assert fifty.value == round(1.9 / 0.6, 2)
    assert fifty.target == TARGET_FANOUT_RATIO
    assert fifty.passed is False
    assert "median of 3 rounds: 1.7 s, 2.4 s, 1.9 s (one endpoint: 900 ms, 500 ms, 600 ms)" in fifty.note
    one = next(c for c in m.checks if "to 1 endpoint" in c.case)
    assert one.note == "median of 3 rounds: 900 ms, 500 ms, 600 ms"
