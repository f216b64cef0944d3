import numpy as np

from tfwidth.space import tiny_space
from tfwidth.stats import WidthStats, regression_costs


def test_update_matches_brute_force_and_round_trips(tmp_path):
    s = tiny_space()
    st = WidthStats(s)
    rng = np.random.default_rng(0)
    k = s.num_choices
    expect_sum = np.zeros((s.num_layers, max(k)))
    expect_cnt = np.zeros_like(expect_sum)
    for _ in range(5):
        ch = np.stack([rng.integers(0, kk, 7) for kk in k], axis=1)
        mask = rng.random(ch.shape) < 0.5
        delta = rng.normal(size=7)
        st.update(ch, delta, mask)
        for n in range(7):
            for l in range(s.num_layers):
                if mask[n, l]:
                    expect_sum[l, ch[n, l]] += delta[n] / mask[n].sum()
                    expect_cnt[l, ch[n, l]] += 1
    np.testing.assert_allclose(st.cur_sum, expect_sum)
    np.testing.assert_array_equal(st.cur_count, expect_cnt)
    st.end_epoch()
    np.testing.assert_allclose(st.window_sum, expect_sum)
    st.save(tmp_path / "stats.json")
    back = WidthStats.load(tmp_path / "stats.json")
    np.testing.assert_allclose(back.sum, st.sum)
    np.testing.assert_array_equal(back.window_count, st.window_count)
    assert back.epochs == 1


def test_costs_interpolate_unmeasured_widths():
    s = tiny_space()
    st = WidthStats(s)
    mask = np.zeros((3, s.num_layers), bool)
    mask[0, 0] = mask[1, 0] = mask[2, 1] = True
    choices = np.array([[0] * s.num_layers, [2] * s.num_layers, [1] * s.num_layers])
    st.update(choices, np.array([4.0, 2.0, 1.0]), mask)
    c = st.costs(estimator="mean")
    np.testing.assert_allclose(c[0][:3], [4.0, 3.0, 2.0])  # the middle width interpolated between its neighbours
    assert (c[1] == 1.0).all() and (c[2] == 0).all()  # constant beyond the ends; unmeasured layer -> zeros
    assert ("block3", s.choices[3][0]) in st.unmeasured() and ("stem", s.choices[0][0]) not in st.unmeasured()


def _additive_data(space, n, seed=0, noise=0.0):
    """Configurations drawn uniformly per layer and loss increases from a known additive, non-increasing cost."""
    rng = np.random.default_rng(seed)
    true = [np.append(np.sort(rng.random(k - 1))[::-1], 0.0) for k in space.num_choices]
    ch = np.stack([rng.integers(0, k, n) for k in space.num_choices], axis=1)
    delta = np.array([sum(true[l][c] for l, c in enumerate(row)) for row in ch]) + noise * rng.normal(size=n)
    return true, ch, delta


def test_regression_recovers_additive_costs_that_the_split_means_flatten():
    s = tiny_space()
    true, ch, delta = _additive_data(s, 400)
    st = WidthStats(s)
    st.update(ch, delta)  # all-layers: every example attributed to every layer
    exact = regression_costs(s, *st.normal_equations(), ridge=1e-10)
    reg = st.costs(estimator="regression")  # the default ridge shrinks a little
    for l in range(s.num_layers):
        np.testing.assert_allclose(exact[l], true[l], atol=1e-6)
        np.testing.assert_allclose(reg[l], true[l], atol=1e-2)
    # the split means shrink every layer's spread by the number of layers (and mix in the others' noise)
    mean = st.costs(estimator="mean")
    spread = lambda c: max(np.ptp(r) for r in c)  # noqa: E731
    assert spread(mean) < 0.5 * spread(true)
    assert st.costs() is not None and np.allclose(st.costs()[0], reg[0])  # auto picks the regression


def test_regression_is_non_increasing_and_pins_the_max_width():
    s = tiny_space()
    rng = np.random.default_rng(1)
    ch = np.stack([rng.integers(0, k, 50) for k in s.num_choices], axis=1)
    st = WidthStats(s)
    st.update(ch, rng.normal(size=50))  # pure noise: unconstrained costs would zig-zag
    for row in st.costs(estimator="regression"):
        assert row[-1] == 0.0 and (np.diff(row) <= 1e-12).all() and (row >= 0).all()


def test_regression_round_trips_and_rolls_per_epoch(tmp_path):
    s = tiny_space()
    true, ch, delta = _additive_data(s, 60, seed=2, noise=0.01)
    st = WidthStats(s)
    st.update(ch[:30], delta[:30])
    st.end_epoch()
    st.update(ch[30:], delta[30:])
    full = WidthStats(s)
    full.update(ch, delta)
    np.testing.assert_allclose(st.normal_equations("running")[0], full.normal_equations("current")[0])
    st.save(tmp_path / "stats.json")
    back = WidthStats.load(tmp_path / "stats.json")
    for view in ("running", "window", "current"):
        for a, b in zip(back.normal_equations(view), st.normal_equations(view)):
            np.testing.assert_allclose(a, b)
        for a, b in zip(back.costs(view), st.costs(view)):
            np.testing.assert_allclose(a, b)


def test_old_stats_without_regression_fall_back_to_means(tmp_path):
    import json
    import pytest
    from tfwidth.errors import UsageError
    s = tiny_space()
    true, ch, delta = _additive_data(s, 40, seed=3)
    st = WidthStats(s)
    st.update(ch, delta)
    d = st.to_json()
    del d["regression"]
    (tmp_path / "old.json").write_text(json.dumps(d))
    old = WidthStats.load(tmp_path / "old.json")
    for a, b in zip(old.costs(), st.costs(estimator="mean")):
        np.testing.assert_allclose(a, b)
    with pytest.raises(UsageError, match="--stats-estimator mean"):
        old.costs(estimator="regression")


def test_a_special_max_network_biases_the_pinned_fit_but_not_the_intercept():
    """The max network measured better than its layers add up to (as the sandwich rule makes it): a free constant
    recovers the per-layer costs exactly, pinning the max network at 0 cannot; same for the pairwise fit."""
    from tfwidth.stats import pairwise_costs
    s = tiny_space()
    true, ch, delta = _additive_data(s, 400, seed=4)
    delta = delta + 0.3  # every configuration 0.3 worse than the max network's additive prediction
    st = WidthStats(s)
    st.update(ch, delta)
    free = regression_costs(s, *st.normal_equations("current"), ridge=1e-10, min_step=0.0)
    pinned = regression_costs(s, *st.normal_equations("current"), ridge=1e-10, min_step=0.0, intercept=False)
    pair = pairwise_costs(s, ch, delta, ridge=1e-10, min_step=0.0)
    for l in range(s.num_layers):
        np.testing.assert_allclose(free[l], true[l], atol=1e-6)
        np.testing.assert_allclose(pair.unary[l], true[l], atol=1e-5)
    assert max(abs(p - t).max() for p, t in zip(pinned, true)) > 0.05
    assert all(abs(p).max() < 1e-5 for p in pair.pairwise)  # no shape cost in an additive truth


def test_flat_data_break_ties_towards_the_wider_width():
    """No width effect at all: every step down costs exactly min_step x the mean loss increase."""
    from tfwidth.stats import MIN_STEP, pairwise_costs
    s = tiny_space()
    rng = np.random.default_rng(5)
    ch = np.stack([rng.integers(0, k, 200) for k in s.num_choices], axis=1)
    delta = np.full(200, 0.4)
    st = WidthStats(s)
    st.update(ch, delta)
    for costs in (st.costs(estimator="regression"), pairwise_costs(s, ch, delta).unary):
        for row, k in zip(costs, s.num_choices):
            np.testing.assert_allclose(row, MIN_STEP * 0.4 * np.arange(k - 1, -1, -1), rtol=1e-6, atol=1e-12)
