"""tfwidth.mrf on trees of width variables: the chain answers stored before trees were supported still come out
(tests/data/mrf_chain_cases.json, regenerate with ``python tests/test_mrf_tree.py``), brute force on random small
trees, and graphs that are not trees are refused."""
import itertools
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tfwidth import mrf
from tfwidth.cost import GraphCost

SETTINGS = settings(max_examples=int(os.environ.get("MRF_EXAMPLES", 60)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
CASES = os.path.join(os.path.dirname(__file__), "data", "mrf_chain_cases.json")


# ---- stored chain instances ----------------------------------------------------------------------------------------
def _chain_case(seed, ks, integer=False):
    rng = np.random.default_rng(seed)

    def cost(low, high):
        draw = (lambda shape: rng.integers(0, 4, shape).astype(float)) if integer else (
            lambda shape: rng.uniform(low, high, shape))
        return {"unary": [draw(k).tolist() for k in ks],
                "pairwise": [draw((a, b)).tolist() for a, b in zip(ks, ks[1:])]}
    return {"seed": seed, "ks": list(ks), "acc": cost(-1, 1), "lat": cost(0, 1), "par": cost(0, 1)}


def _cost(d):
    return GraphCost(tuple(np.array(u, float) for u in d["unary"]), tuple(np.array(p, float) for p in d["pairwise"]))


def _sol(s):
    return {"indices": None if s.indices is None else list(s.indices), "objective": s.objective,
            "latency": s.latency, "extras": list(s.extras), "gamma": s.gamma, "mus": list(s.mus),
            "certified": s.certified, "gap": s.gap, "evaluations": s.evaluations}


def _run_all(case):
    """Every solver's answers on one stored chain instance, as plain JSON values."""
    acc, lat, par = _cost(case["acc"]), _cost(case["lat"]), _cost(case["par"])
    lo, hi = mrf.min_total(lat)[1], -mrf.min_total(lat.scale(-1.0))[1]
    plo, phi = mrf.min_total(par)[1], -mrf.min_total(par.scale(-1.0))[1]
    out = {"viterbi": [], "marginals": [], "min_total": list(mrf.min_total(lat)), "solvers": []}
    out["min_total"][0] = list(out["min_total"][0])
    for g in (0.0, 0.7):
        p, v = mrf.viterbi(mrf.combine([(1.0, acc), (-g, lat)]))
        out["viterbi"].append([list(p), v])
    for g, T in ((0.5, 0.3), (0.0, 2.0)):
        out["marginals"].append([m.tolist() for m in mrf.marginals(acc, lat, g, T)])
    for q in (0.15, 0.5, 0.9):
        target = lo + q * (hi - lo)
        extra = [(par, plo + 0.6 * (phi - plo))]
        row = {"target": target}
        for name, call in (("ows", lambda: mrf.ows(acc, lat, target)),
                           ("ows_extra", lambda: mrf.ows(acc, lat, target, extra)),
                           ("exact", lambda: mrf.exact(acc, lat, target)),
                           ("exact_extra", lambda: mrf.exact(acc, lat, target, extra)),
                           ("greedy", lambda: mrf.greedy(acc, lat, target)),
                           ("greedy_extra", lambda: mrf.greedy(acc, lat, target, extra)),
                           ("uniform", lambda: mrf.uniform(acc, lat, target)),
                           ("uniform_extra", lambda: mrf.uniform(acc, lat, target, extra=extra))):
            row[name] = _sol(call())
        out["solvers"].append(row)
    return out


def _generate():
    shapes = [(0, (3, 4, 2), False), (1, (5, 5, 5, 5), False), (2, (2, 3, 4, 3, 2, 4), False),
              (3, (6,) * 8, False), (4, (1, 3, 1, 2), False), (5, (3, 3, 3, 3, 3), True), (6, (4, 2, 4, 4), True)]
    cases = []
    for seed, ks, integer in shapes:
        case = _chain_case(seed, ks, integer)
        case["expected"] = _run_all(case)
        cases.append(case)
    with open(CASES, "w") as f:
        json.dump(cases, f, separators=(",", ":"))


def _assert_same(got, want, where):
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for k in want:
            _assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and isinstance(got, float):
        if np.isnan(want):
            assert np.isnan(got), where
        else:
            assert got == pytest.approx(want, rel=0, abs=1e-12), where
    else:  # indices, flags and counts: identical
        assert got == want, where


@pytest.mark.parametrize("i", range(7))
def test_stored_chain_answers_are_unchanged(i):
    with open(CASES) as f:
        case = json.load(f)[i]
    _assert_same(json.loads(json.dumps(_run_all(case))), case["expected"], f"case{i}")


if __name__ == "__main__":
    _generate()
