import numpy as np

from tfwidth.space import tiny_space
from tfwidth.stats import WidthStats


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
    c = st.costs()
    np.testing.assert_allclose(c[0][:3], [4.0, 3.0, 2.0])  # the middle width interpolated between its neighbours
    assert (c[1] == 1.0).all() and (c[2] == 0).all()  # constant beyond the ends; unmeasured layer -> zeros
    assert ("block3", s.choices[3][0]) in st.unmeasured() and ("stem", s.choices[0][0]) not in st.unmeasured()
