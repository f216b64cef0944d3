import numpy as np
import pytest

from tfwidth import aows, mrf
from tfwidth.solve import acc_chain
from tfwidth.space import tiny_space


def test_schedule_is_the_papers_in_fractions():
    # 20 epochs: uniform until epoch 5, 0.01 at epoch 6, 0.001 at epoch 10, 0.0005 at the end
    assert aows.temperature(0.0) == 1.0 and aows.temperature(0.25) == 1.0
    assert aows.temperature(6 / 20) == pytest.approx(0.01)
    assert aows.temperature(10 / 20) == pytest.approx(0.001)
    assert aows.temperature(1.0) == pytest.approx(0.0005)
    ts = [aows.temperature(p) for p in np.linspace(0.25, 1, 50)]
    assert all(a >= b for a, b in zip(ts, ts[1:]))
    # log-linear between points
    assert aows.temperature(0.4) == pytest.approx(10 ** ((np.log10(0.01) + np.log10(0.001)) / 2))


def _problem(space, seed=0):
    rng = np.random.default_rng(seed)
    costs = [np.sort(rng.random(k))[::-1] * 0.5 for k in space.num_choices]
    mac = space.mac_chain()
    lat = mac.scale(1e-6)
    return costs, lat


def test_warmup_is_uniform_then_marginals_narrow():
    space = tiny_space()
    costs, lat = _problem(space)
    mid = lat.total(space.to_indices(space.uniform(1.0)))
    s0 = aows.sampling_state(space, costs, lat, mid, 0.1)
    assert s0.warmup and all(np.allclose(p, 1 / len(p)) for p in s0.probs)
    ent = [np.mean(aows.sampling_state(space, costs, lat, mid, p).entropy()) for p in (0.3, 0.5, 1.0)]
    assert ent[0] > ent[1] > ent[2]
    late = aows.sampling_state(space, costs, lat, mid, 1.0)
    expect = mrf.marginals(acc_chain(space, costs), lat, late.gamma, late.temperature)
    for a, b in zip(late.probs, expect):
        np.testing.assert_allclose(a, b)
    # at the end the mode of every layer is the OWS configuration
    assert tuple(space.choices[l][int(np.argmax(p))] for l, p in enumerate(late.probs)) == late.widths
    assert late.predicted_ms <= mid + 1e-9


def test_padded_rows_are_distributions():
    space = tiny_space()
    costs, lat = _problem(space, 1)
    st = aows.sampling_state(space, costs, lat, lat.total(space.to_indices(space.max_widths)), 0.6)
    P = st.padded(max(space.num_choices) + 2)
    np.testing.assert_allclose(P.sum(1), 1.0)
    assert (P[:, max(space.num_choices):] == 0).all()
