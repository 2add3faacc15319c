"""Steering a latency re-tune to its target from both sides: pure functions, no timing.

The re-tune asks the mask search for a predicted speedup g (its latency budget is dense / g)
and measures the narrowed model's speedup m(g), which grows with g but not as the latency
table predicts (the table over-predicts cost on ONNX Runtime CPU; INT8 changes it again). The
target is a target, not a floor: the loop keeps the measured points below and above it, and
- within `tol` of the target (and resolved, below): stop;
- bracketed (points on both sides): interpolate g linearly between the nearest two (regula
  falsi), kept at least a tenth of the bracket away from its ends so that it always shrinks;
- one-sided: scale g by target / m, the proportional step, or a secant through the last two
  points on that side when they give a steeper, positive slope (at most doubling g);
- g never leaves [floor, ceiling]: floor 1 is the dense model, the ceiling is what pruning
  heads and neurons can reach in the latency table.
A point is *resolved* when its 95% interval lies wholly inside or wholly outside the band
target·(1 ± tol); the loop re-measures an unresolved point before trusting it, and says so
when the noise never allows the call.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    goal: float                       # predicted speedup the search was given
    measured: float                   # measured speedup over dense (median ratio)
    ci95: tuple[float, float] | None = None

    def band(self, target: float, tol: float) -> str:
        """'within', 'below' or 'above' the target band, by the point estimate."""
        if abs(self.measured - target) <= tol * target:
            return "within"
        return "below" if self.measured < target else "above"

    def resolved(self, target: float, tol: float) -> bool:
        """The 95% interval does not straddle an edge of the band: the call is not noise."""
        if self.ci95 is None:
            return True
        lo, hi = self.ci95
        edges = (target * (1 - tol), target * (1 + tol))
        return not any(lo < e < hi for e in edges)


@dataclass(frozen=True)
class Step:
    goal: float | None                # next goal to measure; None: stop
    reason: str


def next_goal(points: list[Point], target: float, tol: float = 0.05, floor: float = 1.0,
              ceiling: float = float("inf")) -> Step:
    if not points:
        return Step(min(max(target, floor), ceiling), "first round: the target itself")
    within = [p for p in points if p.band(target, tol) == "within"]
    if within:
        return Step(None, f"within {tol:.0%} of the target")
    below = [p for p in points if p.measured < target]
    above = [p for p in points if p.measured > target]
    lo = max(below, key=lambda p: p.goal) if below else None
    hi = min(above, key=lambda p: p.goal) if above else None
    if lo and hi:
        if lo.goal >= hi.goal:
            return Step(None, "measurements contradict each other (a higher goal measured slower): the noise is "
                              "larger than the step between masks")
        width = hi.goal - lo.goal
        if width <= 1e-3 * lo.goal:
            return Step(None, "bracket closed: no mask between the two nearest points")
        g = lo.goal + (target - lo.measured) * width / (hi.measured - lo.measured)
        g = min(max(g, lo.goal + 0.1 * width), hi.goal - 0.1 * width)
        return Step(g, f"bracketed by goals {lo.goal:.3f} ({lo.measured:.2f}x) and {hi.goal:.3f} "
                       f"({hi.measured:.2f}x): interpolated")
    if lo:
        if lo.goal >= ceiling:
            return Step(None, f"the latency table's ceiling {ceiling:.2f}x is reached and still short")
        g = lo.goal * target / lo.measured
        side = sorted(below, key=lambda p: p.goal)[-2:]
        if len(side) == 2 and side[1].measured > side[0].measured and side[1].goal > side[0].goal:
            slope = (side[1].measured - side[0].measured) / (side[1].goal - side[0].goal)
            g = max(g, side[1].goal + (target - side[1].measured) / slope)
        return Step(min(g, 2 * lo.goal, ceiling), f"short of the target at goal {lo.goal:.3f}: tighten")
    if hi.goal <= floor:
        return Step(None, f"even goal {floor:.2f} (no pruning asked) measures {hi.measured:.2f}x, above the target")
    g = hi.goal * target / hi.measured
    return Step(max(g, floor), f"past the target at goal {hi.goal:.3f}: loosen")


def choose(points: list[Point], target: float, tol: float = 0.05) -> int:
    """Index of the round to keep: within the band (nearest the target); else the slowest that
    reaches the target (the least accuracy given up); else the fastest."""
    def dist(i):
        return abs(points[i].measured - target)

    idx = range(len(points))
    within = [i for i in idx if points[i].band(target, tol) == "within"]
    if within:
        return min(within, key=dist)
    above = [i for i in idx if points[i].measured >= target]
    if above:
        return min(above, key=lambda i: points[i].measured)
    return max(idx, key=lambda i: points[i].measured)
