"""tfwidth.mrf on trees of width variables: the chain answers stored before trees were supported still come out
(tests/data/mrf_chain_cases.json, recorded with the chain-only solvers of c2fe637; see the end of the file), brute
force on random small trees, and graphs that are not trees are refused."""
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tfwidth import mrf
from tfwidth.cost import GraphCost

from test_mrf import brute_force, check_exact, check_max_sum  # tests/ is on sys.path under pytest

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


# ---- random small trees against brute force -----------------------------------------------------------------------
@st.composite
def tree_problems(draw):
    """acc, lat, par over one random tree (random parents, edge orientation and edge order), every configuration's
    totals, a latency target and a parameter limit."""
    seed = draw(st.integers(0, 2 ** 32 - 1))
    n = draw(st.integers(2, 6))
    ks = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    rng = np.random.default_rng(seed)
    edges = [(int(rng.integers(0, v)), v) for v in range(1, n)]
    edges = [(j, i) if rng.random() < 0.5 else (i, j) for i, j in edges]
    edges = [edges[e] for e in rng.permutation(len(edges))]

    def cost(low, high):
        return GraphCost(tuple(rng.uniform(low, high, k) for k in ks),
                         tuple(rng.uniform(low, high, (ks[i], ks[j])) for i, j in edges), tuple(edges))
    return brute_force(draw, ks, cost(-1, 1), cost(0, 1), cost(0, 1))


@SETTINGS
@given(tree_problems(), st.floats(0.0, 5.0))
def test_tree_max_sum_equals_brute_force(prob, gamma):
    check_max_sum(prob, gamma)


@SETTINGS
@given(tree_problems(), st.floats(0.0, 3.0), st.floats(0.05, 5.0))
def test_tree_marginals_equal_brute_force(prob, gamma, T):
    acc, lat, _, configs, A, L, _, _, _ = prob
    w = np.exp((A - gamma * L - (A - gamma * L).max()) / T)
    w /= w.sum()
    for i, p in enumerate(mrf.marginals(acc, lat, gamma, T)):
        bf = np.array([w[[c[i] == j for c in configs]].sum() for j in range(len(p))])
        np.testing.assert_allclose(p, bf, atol=1e-12)


@SETTINGS
@given(tree_problems())
def test_tree_exact_and_ows_against_brute_force(prob):
    acc, lat, par, _, A, L, P, target, plimit = prob
    ok = L <= target + 1e-9
    sol = mrf.exact(acc, lat, target)
    check_exact(sol, ok, A)
    assert sol.latency <= target + 1e-9
    o = mrf.ows(acc, lat, target)
    assert o.feasible and o.latency <= target + 1e-9 and o.objective <= sol.objective + sol.gap + 1e-9
    assert o.objective - o.gamma * o.latency >= (A - o.gamma * L).max() - 1e-9  # a supporting line at its gamma
    ok2 = ok & (P <= plimit + 1e-9)
    sol2 = mrf.exact(acc, lat, target, extra=[(par, plimit)])
    check_exact(sol2, ok2, A)
    o2 = mrf.ows(acc, lat, target, extra=[(par, plimit)])
    if o2.feasible:
        assert o2.latency <= target + 1e-9 and o2.extras[0] <= plimit + 1e-9
        assert o2.objective <= A[ok2].max() + 1e-9
    for s in (sol2, o2):
        if s.feasible:
            assert s.objective == pytest.approx(acc.total(s.indices)) and s.extras[0] == pytest.approx(
                par.total(s.indices))


@SETTINGS
@given(tree_problems())
def test_tree_baselines_are_feasible(prob):
    acc, lat, par, _, A, L, P, target, plimit = prob
    for extra, ok in (([], L <= target + 1e-9), ([(par, plimit)], (L <= target + 1e-9) & (P <= plimit + 1e-9))):
        for sol in (mrf.greedy(acc, lat, target, extra), mrf.uniform(acc, lat, target, extra=extra)):
            if sol.feasible:
                assert sol.latency <= target + 1e-9 and all(v <= plimit + 1e-9 for v in sol.extras)
                assert sol.objective == pytest.approx(acc.total(sol.indices))
                assert sol.objective <= A[ok].max() + 1e-9
    g = mrf.greedy(acc, lat, target)
    if not g.feasible:  # greedy only gives up at the narrowest configuration
        assert lat.total([0] * len(acc.unary)) > target + 1e-9


def test_a_star_by_hand():
    # variable 0 in the middle of 1 and 2; edges given as (child, parent) and (parent, child)
    u = (np.array([0.0, 1.0]), np.array([0.0, 2.0]), np.array([0.0, 4.0]))
    acc = GraphCost(u, (np.array([[0.0, 0.0], [0.0, -3.0]]).T, np.zeros((2, 2))), ((1, 0), (0, 2)))
    lat = GraphCost(u, (np.zeros((2, 2)), np.zeros((2, 2))), ((1, 0), (0, 2)))
    assert mrf.viterbi(acc) == ((0, 1, 1), 6.0)  # (1, 1, 1) scores 7 - 3
    assert mrf.exact(acc, lat, 6.0).indices == (0, 1, 1)  # 6 ms: 0 and 2 (score 6), not 1 and 2 (score 4)
    assert mrf.exact(acc, lat, 5.0).indices == (1, 0, 1)


@pytest.mark.parametrize("edges, n, problem", [
    (((0, 1), (1, 2), (0, 2)), 3, "closes a cycle"),
    (((0, 1), (1, 0)), 3, "closes a cycle"),
    (((1, 1),), 2, "closes a cycle"),
    (((0, 1),), 3, r"\[0, 1\] are not connected to variable 2"),
    (((0, 3),), 2, "outside 0..1"),
])
def test_a_graph_that_is_not_a_tree_is_refused(edges, n, problem):
    c = GraphCost(tuple(np.zeros(2) for _ in range(n)), tuple(np.zeros((2, 2)) for _ in edges), edges)
    for call in (lambda: mrf.viterbi(c), lambda: mrf.marginals(c, c, 0.0, 1.0), lambda: mrf.exact(c, c, 1.0),
                 lambda: mrf.ows(c, c, 1.0), lambda: mrf.greedy(c, c, 1.0), lambda: mrf.uniform(c, c, 1.0)):
        with pytest.raises(ValueError, match="not a tree|outside") as e:
            call()
        assert "tfwidth.mrf solves trees" in str(e.value)
        assert e.match(problem)


if __name__ == "__main__":
    # Re-records the expected answers from the CURRENT mrf.py: run it only with the code the stored answers are meant
    # to pin (they were recorded with the chain-only solvers of c2fe637), never to make a failing test pass.
    _generate()
