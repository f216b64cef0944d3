"""tfwidth.mrf against brute-force enumeration on many small random chains."""
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tfwidth import mrf
from tfwidth.space import ChainCost

SETTINGS = settings(max_examples=int(__import__("os").environ.get("MRF_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def chain(rng, ks, low=0.0, high=1.0):
    return ChainCost(tuple(rng.uniform(low, high, k) for k in ks),
                     tuple(rng.uniform(low, high, (a, b)) for a, b in zip(ks, ks[1:])))


@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2 ** 32 - 1))
    n = draw(st.integers(3, 5))
    ks = draw(st.lists(st.integers(2, 4), min_size=n, max_size=n))
    rng = np.random.default_rng(seed)
    acc, lat, par = chain(rng, ks, -1, 1), chain(rng, ks), chain(rng, ks)
    return brute_force(draw, ks, acc, lat, par)


def brute_force(draw, ks, acc, lat, par):
    """Every configuration (indices per variable) and its acc, lat and par totals, a latency target and a parameter
    limit drawn between the extremes: the problem tuple every brute-force test unpacks (chains and trees)."""
    paths = list(itertools.product(*[range(k) for k in ks]))
    A, L, P = (np.array([c.total(p) for p in paths]) for c in (acc, lat, par))
    target = float(L.min() + draw(st.floats(0.0, 1.0)) * (L.max() - L.min()))
    plimit = float(P.min() + draw(st.floats(0.0, 1.0)) * (P.max() - P.min()))
    return acc, lat, par, paths, A, L, P, target, plimit


@SETTINGS
@given(problems(), st.floats(0.0, 5.0))
def test_viterbi_equals_brute_force(prob, gamma):
    check_max_sum(prob, gamma)


def check_max_sum(prob, gamma):
    acc, lat, _, _, A, L, _, _, _ = prob
    path, value = mrf.viterbi(mrf.combine([(1.0, acc), (-gamma, lat)]))
    assert value == pytest.approx((A - gamma * L).max(), abs=1e-9)
    assert acc.total(path) - gamma * lat.total(path) == pytest.approx(value, abs=1e-9)
    fastest, ms = mrf.min_total(lat)
    assert ms == pytest.approx(L.min(), abs=1e-9) and lat.total(fastest) == pytest.approx(ms, abs=1e-9)


@SETTINGS
@given(problems())
def test_exact_equals_brute_force(prob):
    acc, lat, _, _, A, L, _, target, _ = prob
    sol = mrf.exact(acc, lat, target)
    assert sol.feasible and sol.latency <= target + 1e-9
    check_exact(sol, L <= target + 1e-9, A)


def check_exact(sol, ok, A):
    """exact's answer against the best score among the configurations ``ok`` marks as feasible."""
    if not ok.any():
        assert not sol.feasible
        return
    assert sol.feasible
    best = A[ok].max()
    if sol.certified:
        assert sol.objective == pytest.approx(best, abs=1e-9)
    else:  # within the discretisation: the reported gap bounds the optimum
        assert sol.objective <= best + 1e-9 <= sol.objective + sol.gap + 2e-9


@SETTINGS
@given(problems())
def test_exact_with_params_budget_equals_brute_force(prob):
    acc, lat, par, _, A, L, P, target, plimit = prob
    sol = mrf.exact(acc, lat, target, extra=[(par, plimit)])
    ok = (L <= target + 1e-9) & (P <= plimit + 1e-9)
    check_exact(sol, ok, A)
    if sol.feasible:
        assert sol.latency <= target + 1e-9 and sol.extras[0] <= plimit + 1e-9


def upper_hull(L, A):
    pts = sorted(set(zip(L.round(12), A.round(12))), key=lambda p: (p[0], -p[1]))
    hull = []
    for p in pts:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    # keep the part where more latency buys more score (gamma >= 0)
    best = max(range(len(hull)), key=lambda i: (hull[i][1], -hull[i][0]))
    return hull[:best + 1]


@SETTINGS
@given(problems())
def test_ows_is_feasible_and_on_the_convex_hull(prob):
    acc, lat, _, _, A, L, _, target, _ = prob
    sol = mrf.ows(acc, lat, target)
    assert sol.feasible and sol.latency <= target + 1e-9  # a feasible point always exists here
    # a supporting line at the returned gamma: no configuration is above it
    assert sol.objective - sol.gamma * sol.latency >= (A - sol.gamma * L).max() - 1e-9
    # and it is the best hull vertex that meets the target
    vertices = [a for l, a in upper_hull(L, A) if l <= target + 1e-9]
    assert sol.objective >= max(vertices) - 1e-9
    assert sol.objective <= A[L <= target].max() + 1e-9


@SETTINGS
@given(problems())
def test_ows_with_params_budget_is_feasible(prob):
    acc, lat, par, _, A, L, P, target, plimit = prob
    sol = mrf.ows(acc, lat, target, extra=[(par, plimit)])
    if sol.feasible:
        assert sol.latency <= target + 1e-9 and sol.extras[0] <= plimit + 1e-9
        assert sol.objective <= A[(L <= target + 1e-9) & (P <= plimit + 1e-9)].max() + 1e-9


@SETTINGS
@given(problems())
def test_baselines_are_feasible_and_never_beat_exact(prob):
    acc, lat, _, _, A, L, _, target, _ = prob
    best = A[L <= target].max()
    for sol in (mrf.greedy(acc, lat, target), mrf.uniform(acc, lat, target)):
        if sol.feasible:
            assert sol.latency <= target + 1e-9
            assert sol.objective <= best + 1e-9
            assert sol.objective == pytest.approx(acc.total(sol.indices))
    # greedy only stops at the narrowest configuration, which then must be the fastest to have failed
    g = mrf.greedy(acc, lat, target)
    if not g.feasible:
        assert lat.total([0] * len(acc.unary)) > target


def test_greedy_and_uniform_by_hand():
    # two nodes, two widths; shrinking node 1 saves 2 ms for 0.1 score, node 0 saves 1 ms for 0.5
    acc = ChainCost((np.array([-0.5, 0.0]), np.array([-0.1, 0.0])), (np.zeros((2, 2)),))
    lat = ChainCost((np.array([1.0, 2.0]), np.array([1.0, 3.0])), (np.zeros((2, 2)),))
    assert mrf.greedy(acc, lat, 4.0).indices == (1, 0)
    assert mrf.greedy(acc, lat, 2.0).indices == (0, 0)
    assert mrf.uniform(acc, lat, 4.9, candidates=[(0, 0), (1, 1)]).indices == (0, 0)
    assert mrf.uniform(acc, lat, 5.0, candidates=[(0, 0), (1, 1)]).indices == (1, 1)
    assert not mrf.uniform(acc, lat, 1.0, candidates=[(0, 0), (1, 1)]).feasible


@SETTINGS
@given(problems(), st.floats(0.0, 3.0), st.floats(0.05, 5.0))
def test_marginals_equal_brute_force(prob, gamma, T):
    acc, lat, _, paths, A, L, _, _, _ = prob
    m = mrf.marginals(acc, lat, gamma, T)
    w = np.exp((A - gamma * L - (A - gamma * L).max()) / T)
    w /= w.sum()
    for i, p in enumerate(m):
        bf = np.array([w[[q[i] == j for q in paths]].sum() for j in range(len(p))])
        np.testing.assert_allclose(p, bf, atol=1e-12)


@SETTINGS
@given(problems(), st.floats(0.0, 3.0))
def test_marginals_low_temperature_is_the_viterbi_path(prob, gamma):
    acc, lat, _, _, A, L, _, _, _ = prob
    score = A - gamma * L
    top = np.sort(score)[::-1]
    if top[0] - top[1] < 1e-6:
        return  # a tie: the limit is split between the tied paths
    path, _ = mrf.viterbi(mrf.combine([(1.0, acc), (-gamma, lat)]))
    for T in (1e-3 * (top[0] - top[1]), 1e-200):
        m = mrf.marginals(acc, lat, gamma, T)
        assert all(np.isfinite(p).all() for p in m)
        assert [int(np.argmax(p)) for p in m] == list(path)
        assert min(p.max() for p in m) > 1 - 1e-6


@SETTINGS
@given(problems(), st.floats(0.0, 3.0))
def test_marginals_high_temperature_is_uniform(prob, gamma):
    acc, lat, _, _, _, _, _, _, _ = prob
    for p in mrf.marginals(acc, lat, gamma, 1e9):
        np.testing.assert_allclose(p, np.full(len(p), 1 / len(p)), atol=1e-6)


def test_infeasible_target_and_nan_inputs():
    rng = np.random.default_rng(0)
    acc, lat = chain(rng, (3, 3, 3), -1, 1), chain(rng, (3, 3, 3), 0.5, 1.0)
    for solver in (mrf.ows, mrf.exact, mrf.greedy, mrf.uniform):
        assert not solver(acc, lat, 0.1).feasible
    bad = ChainCost((np.array([np.nan, 0, 0]),) + acc.unary[1:], acc.pairwise)
    with pytest.raises(ValueError, match="NaN"):
        mrf.ows(bad, lat, 10.0)


def test_costs_carry_their_graph():
    """A GraphCost's pairwise terms sit on its edges (default: the chain); costs over different graphs don't mix."""
    ks = (2, 3, 2)
    chain = ChainCost(tuple(np.arange(k, dtype=float) for k in ks), (np.ones((2, 3)), np.ones((3, 2))))
    assert chain.edges == ((0, 1), (1, 2)) and chain.is_chain
    star = ChainCost(chain.unary, (np.ones((2, 3)), np.full((2, 2), 5.0)), edges=((0, 1), (0, 2)))
    assert not star.is_chain and star.total((1, 2, 1)) == 1 + 2 + 1 + 1 + 5
    assert mrf.viterbi(star) == ((1, 2, 1), 10.0)  # trees are solved (tests/test_mrf_tree.py)
    with pytest.raises(ValueError, match="different graphs"):
        chain + star
    with pytest.raises(ValueError, match="pairwise terms"):
        ChainCost(chain.unary, chain.pairwise[:1])
