"""Accuracy against a baseline curve at equal measured latency, with a paired bootstrap over test images.

A baseline is a curve: its networks' points (measured ms, per-image correctness on the test images). A searched
network is compared with the curve at its own measured latency, so spending more of the budget earns nothing. Two
readings of the curve there:
- interpolated: its two neighbouring points, linearly in log latency, per image; beyond the curve's ends the end
  segment is extended (and the comparison flagged);
- best: its most accurate point no slower than the network (best_within), which is what a user who can try every
  uniform network under the budget gets: stricter where the curve is not monotone, laxer between the points of a
  monotone stretch (no network exists there).
The difference is then a mean over test images of per-image differences, so the interval comes from resampling test
images (the same draw for every difference: paired); it covers the test-set sampling noise, not seed-to-seed
training noise, which the per-seed values show.

In: curves as [(ms, correct[N])]; out: per-image difference vectors and bootstrap summaries (numpy only).
"""
from __future__ import annotations

import numpy as np

DRAWS = 2000
LEVEL = 0.95


def weights(points_ms, ms: float) -> tuple[int, int, float, bool]:
    """For curve latencies ``points_ms`` (any order, >= 2 distinct) and a latency ``ms``: indices (i, j) of the two
    points it is interpolated from, the weight ``w`` of point i (value = w * y_i + (1 - w) * y_j, w outside [0, 1]
    when extrapolating), and whether ``ms`` lies inside the curve's range."""
    x = np.log(np.asarray(points_ms, np.float64))
    order = np.argsort(x, kind="stable")
    xs = x[order]
    if len(xs) < 2 or xs[-1] <= xs[0]:
        raise ValueError(f"a curve needs two points of different latency, got {list(points_ms)}")
    t = float(np.log(ms))
    inside = bool(xs[0] <= t <= xs[-1])
    k = int(np.clip(np.searchsorted(xs, t), 1, len(xs) - 1))
    lo, hi = k - 1, k
    while xs[hi] <= xs[lo] and lo > 0:  # equal latencies: step down to a segment of positive length
        lo -= 1
    while xs[hi] <= xs[lo] and hi < len(xs) - 1:
        hi += 1
    w = (xs[hi] - t) / (xs[hi] - xs[lo])
    return int(order[lo]), int(order[hi]), float(w), inside


def at_latency(curve, ms: float) -> tuple[np.ndarray, bool]:
    """The curve's per-image value at ``ms`` (mean = its interpolated accuracy) and whether ``ms`` is inside it."""
    i, j, w, inside = weights([p[0] for p in curve], ms)
    yi, yj = (np.asarray(curve[k][1], np.float64) for k in (i, j))
    return w * yi + (1.0 - w) * yj, inside


def best_index(points_ms, means, ms: float) -> tuple[int, bool]:
    """Index of the most accurate point (highest of ``means``; the faster one on a tie) among those whose latency
    ``points_ms`` is at or under ``ms``, and whether any is; when none is, the fastest point's index and False."""
    x, m = np.asarray(points_ms, np.float64), np.asarray(means, np.float64)
    fits = np.flatnonzero(x <= ms)
    if len(fits) == 0:
        return int(np.argmin(x)), False
    return int(max(fits, key=lambda k: (m[k], -x[k]))), True


def best_within(curve, ms: float) -> tuple[np.ndarray, bool]:
    """The per-image values of the curve's most accurate point among those measured at or under ``ms`` (best_index),
    and whether any point fits. Why beside the interpolation: a ladder of uniform networks is not monotone when the
    supernet trained some widths more than others (the sandwich rule trains the narrowest every step), and a user
    who can run any uniform network under the budget takes the best of them, not the one a line through its
    neighbours predicts."""
    k, inside = best_index([p[0] for p in curve], [np.mean(p[1]) for p in curve], ms)
    return np.asarray(curve[k][1], np.float64), inside


def difference(correct, ms: float, curve, baseline: str = "interpolated") -> tuple[np.ndarray, bool]:
    """Per-image (network - curve at the network's latency): its mean is the accuracy difference at equal latency.
    ``baseline``: "interpolated" reads the curve between its two neighbouring points (at_latency), "best" takes its
    most accurate point that is no slower than the network (best_within)."""
    if baseline not in ("interpolated", "best"):
        raise ValueError(f"baseline {baseline!r}: choose 'interpolated' or 'best'")
    base, inside = (at_latency if baseline == "interpolated" else best_within)(curve, ms)
    return np.asarray(correct, np.float64) - base, inside


def bootstrap(diffs, draws: int = DRAWS, seed: int = 0, level: float = LEVEL) -> dict:
    """Mean of the per-image difference vectors ``diffs`` (each [N], same test images) and its paired bootstrap
    interval: images drawn with replacement, the same draw for every vector. Returns mean, lo, hi (fractions)."""
    d = np.mean(np.stack([np.asarray(v, np.float64) for v in diffs]), axis=0)
    n = len(d)
    rng = np.random.default_rng(seed)
    means = np.empty(draws)
    chunk = max(1, 2_000_000 // max(n, 1))
    for s in range(0, draws, chunk):
        k = min(chunk, draws - s)
        means[s:s + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
    a = (1.0 - level) / 2.0
    return {"mean": float(d.mean()), "lo": float(np.quantile(means, a)), "hi": float(np.quantile(means, 1.0 - a)),
            "draws": int(draws), "images": int(n)}


def above(summary: dict, bar_points: float) -> bool:
    """A bar is met only when the whole interval is above it (``bar_points`` in top-1 points)."""
    return 100.0 * summary["lo"] > bar_points
