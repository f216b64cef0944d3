"""How well does each cost model fit a probe? Cross-validated on the probe's own raw measurements.

For every stats.json given (a run probed by this tfwidth, so its raw configurations and loss increases are kept),
5-fold cross-validation of the four fits tfwidth.stats can make: additive and pairwise, each with the max network's
increase pinned at 0 (the old fit) or with a free constant (the default). Prints, per run, the correlation of the
held-out prediction with the measured loss increase and its RMS error, the fitted constant, and the ratio of the
default's RMS error to the pinned additive fit's (same data, same folds). No TensorFlow: numpy/scipy only, seconds.

    python tools/bench_costfit.py W/seed0/run_ows/stats.json W/seed1/run_ows/stats.json ...
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfwidth.space import ChainCost  # noqa: E402
from tfwidth.stats import WidthStats, pairwise_costs, regression_costs  # noqa: E402

FITS = ("additive pinned", "additive", "pairwise pinned", "pairwise")


def fit(space, ch, y, name):
    intercept = not name.endswith("pinned")
    if name.startswith("additive"):
        st = WidthStats(space)
        st.update(ch, y)
        return regression_costs(space, *st.normal_equations("current"), intercept=intercept)
    return pairwise_costs(space, ch, y, intercept=intercept)


def predict(costs, ch):
    ch = np.asarray(ch)
    unary = costs.unary if isinstance(costs, ChainCost) else costs
    out = sum(np.asarray(u)[ch[:, l]] for l, u in enumerate(unary))
    if isinstance(costs, ChainCost):
        out = out + sum(np.asarray(p)[ch[:, l], ch[:, l + 1]] for l, p in enumerate(costs.pairwise))
    return out


def cross_validate(space, ch, y, name, folds=5, seed=0):
    """Held-out predictions; each fold's constant is the mean residual on its training part (the least-squares
    intercept for the free fits, the bias left by pinning for the pinned ones)."""
    idx = np.array_split(np.random.default_rng(seed).permutation(len(y)), folds)
    pred = np.empty(len(y))
    for f in idx:
        tr = np.setdiff1d(np.arange(len(y)), f)
        c = fit(space, ch[tr], y[tr], name)
        pred[f] = predict(c, ch[f]) + (np.mean(y[tr] - predict(c, ch[tr])) if not name.endswith("pinned") else 0.0)
    return pred


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stats", nargs="+", help="stats.json of probed runs")
    p.add_argument("--folds", type=int, default=5)
    a = p.parse_args(argv)
    print(f"{a.folds}-fold cross-validation on each probe: r (RMS error) of held-out predictions")
    print(f"{'run':<44}" + "".join(f"{n:>22}" for n in FITS) + f"{'constant':>10}{'rmse ratio':>12}")
    for path in a.stats:
        st = WidthStats.load(path)
        if st.probe_choices is None:
            print(f"{path}: no raw probe (probe it with this tfwidth: python -m tfwidth.probe --run RUN)")
            continue
        ch, y = st.probe_choices, st.probe_delta
        cells, rmse = [], {}
        for name in FITS:
            pr = cross_validate(st.space, ch, y, name, a.folds)
            rmse[name] = float(np.sqrt(np.mean((pr - y) ** 2)))
            cells.append(f"{np.corrcoef(pr, y)[0, 1]:.3f} ({rmse[name]:.4f})")
        c = fit(st.space, ch, y, "additive")
        const = float(np.mean(y - predict(c, ch)))
        print(f"{str(path)[-44:]:<44}" + "".join(f"{x:>22}" for x in cells) + f"{const:>+10.3f}"
              f"{rmse['additive'] / rmse['additive pinned']:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
