"""The latency re-tune's steering rule (optin.bracket) on synthetic latency functions: no timing."""
import math

import pytest

from optin.bracket import Point, choose, next_goal

TARGET, TOL = 2.0, 0.05


def drive(speed, target=TARGET, tol=TOL, rounds=8, first=None, ceiling=float("inf"), ci=0.0):
    """The loop of optin.retune without the model: measure speed(goal) until next_goal stops."""
    pts = []
    for _ in range(rounds):
        step = next_goal(pts, target, tol, floor=1.0, ceiling=ceiling)
        if step.goal is None:
            return pts, step.reason
        g = first if (first and not pts) else step.goal
        m = speed(g)
        pts.append(Point(g, m, (m * (1 - ci), m * (1 + ci))))
    return pts, "rounds used"


def test_over_predicting_table_is_loosened_back_to_target():
    # the minilm-rt symptom: the table over-predicts cost, so goal 2.0 measures 2.29x
    pts, why = drive(lambda g: 1 + 1.29 * (g - 1))
    assert pts[0].measured == pytest.approx(2.29)
    assert pts[1].goal < pts[0].goal  # loosened: the loop moves both ways
    assert abs(pts[-1].measured - TARGET) <= TOL * TARGET and "within" in why
    assert len(pts) <= 3


def test_under_predicting_table_is_tightened_then_bracketed():
    pts, why = drive(lambda g: 1 + 0.5 * (g - 1) ** 1.3)
    assert pts[1].goal > pts[0].goal
    assert abs(pts[-1].measured - TARGET) <= TOL * TARGET and "within" in why
    assert pts[choose(pts, TARGET, TOL)] == pts[-1]


def test_bracket_interpolates_and_always_shrinks():
    lo, hi = Point(2.0, 1.8), Point(3.0, 2.6)
    g = next_goal([lo, hi], TARGET, TOL).goal
    assert g == pytest.approx(2.0 + (2.0 - 1.8) / 0.8)  # regula falsi between the nearest two
    # a very flat side would push the next goal to an end: it stays a tenth of the bracket inside
    g = next_goal([Point(2.0, 1.999 - 0.2), Point(3.0, 1.0e6)], TARGET, TOL).goal
    assert g == pytest.approx(2.1)


def test_step_function_of_discrete_masks_stops_with_a_reason():
    # masks are discrete: speed jumps from 1.8x to 2.3x with nothing between
    pts, why = drive(lambda g: 1.8 if g < 2.5 else 2.3, rounds=30)
    assert len(pts) < 30 and "bracket closed" in why
    best = pts[choose(pts, TARGET, TOL)]
    assert best.measured == 2.3  # nothing within 5%: the slowest that reaches the target


def test_noise_that_contradicts_the_order_stops():
    why = next_goal([Point(2.0, 2.3), Point(2.5, 1.7)], TARGET, TOL).reason
    assert "contradict" in why


def test_floor_and_ceiling():
    # INT8 alone already overshoots: no pruning asked and still above the band
    pts, why = drive(lambda g: 2.6, first=1.0)
    assert len(pts) == 1 and "no pruning asked" in why
    # the latency table's ceiling: short and cannot tighten further
    pts, why = drive(lambda g: min(1 + 0.2 * g, 1.6), ceiling=3.0)
    assert pts[-1].goal == 3.0 and "ceiling" in why


def test_resolution_follows_the_interval():
    edges = TARGET * (1 - TOL), TARGET * (1 + TOL)
    assert Point(2.0, 2.02, (1.99, 2.05)).resolved(TARGET, TOL)           # wholly inside the band
    assert Point(2.0, 2.5, (2.3, 2.7)).resolved(TARGET, TOL)             # wholly above
    assert not Point(2.0, 2.05, (edges[1] - 0.05, edges[1] + 0.05)).resolved(TARGET, TOL)
    assert Point(2.0, 2.05, None).resolved(TARGET, TOL)
    assert Point(2.0, 2.05).band(TARGET, TOL) == "within" and Point(2.0, 1.8).band(TARGET, TOL) == "below"


def test_choose_prefers_within_then_reaching():
    pts = [Point(1.5, 1.7), Point(2.5, 2.6), Point(2.2, 2.35)]
    assert choose(pts, TARGET, TOL) == 2  # 2.35 reaches 2.0 with the least overshoot
    pts.append(Point(2.0, 2.04))
    assert choose(pts, TARGET, TOL) == 3
    assert choose([Point(1.5, 1.5), Point(1.8, 1.7)], TARGET, TOL) == 1  # nothing reaches: the fastest


@pytest.mark.parametrize("curve", [lambda g: g ** 0.7, lambda g: 1 + 2 * math.log(g), lambda g: 0.9 * g])
def test_converges_on_smooth_curves(curve):
    pts, why = drive(curve)
    assert "within" in why and len(pts) <= 5
