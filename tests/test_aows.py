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


# ---- training with --aows ---------------------------------------------------------------------------------------
def _table(space, path):
    from tfwidth.latency import LatencyTable
    mac = space.mac_chain().scale(1e-4)  # a latency proportional to MACs: enough to make widths compete
    t = LatencyTable(space, mac.unary[0], mac.pairwise, mac.unary[-1], const=0.05, format="fp32")
    t.save(path)
    return t


def _entropies(run):
    import json
    return [(r["epoch"], r["warmup"], float(np.mean(r["entropy"])), r["probs"])
            for r in map(json.loads, (run / "aows.jsonl").read_text().splitlines())]


def test_train_cli_aows_narrows_after_warmup(tmp_path):
    from tests.conftest import assert_usage_error, run_module
    from tfwidth.train import main
    space = tiny_space(resolution=8, classes=10, levels=4, base=8, layers=4)
    space.save(tmp_path / "space.json")
    table = _table(space, tmp_path / "table.json")
    target = table.predict(space.uniform(0.75))  # tighter than the max network: gamma > 0
    args = ["--space", tmp_path / "space.json", "--dataset", "digits", "--train-limit", 128, "--eval-limit", 32,
            "--batch-size", 32, "--epochs", 4, "--out", tmp_path / "run", "--quiet", "--calib-batches", 1,
            "--aows", "--latency", tmp_path / "table.json", "--target-ms", target]
    assert main([str(a) for a in args]) == 0
    ent = _entropies(tmp_path / "run")
    assert [e[0] for e in ent] == [1, 2, 3, 4]
    assert ent[0][1] and not ent[-1][1]  # warm-up first, adaptive at the end
    uniform_entropy = np.mean([np.log(k) for k in space.num_choices])
    assert ent[0][2] == pytest.approx(uniform_entropy)
    # once the temperature has fallen (epochs 3-4) every epoch samples more narrowly than the warm-up did
    assert max(e[2] for e in ent[2:]) < ent[0][2] - 0.03
    # bad input: --aows without a target, a target no configuration meets
    bad = [str(a) for a in args[:-2]] + ["--out", str(tmp_path / "r2")]
    assert_usage_error(run_module("tfwidth.train", *bad), "--aows needs")
    low = [str(a) for a in args[:-1]] + ["0.001"]
    low[low.index("--out") + 1] = str(tmp_path / "r3")
    assert_usage_error(run_module("tfwidth.train", *low), "below the fastest")


def test_aows_resume_keeps_the_schedule(tmp_path):
    from tests.test_train import _Kill
    from tfwidth.aows import AOWSCallback
    from tfwidth.data import load_data
    from tfwidth.train import train
    space = tiny_space(resolution=8, classes=10, levels=4, base=8, layers=4)
    table = _table(space, tmp_path / "table.json")
    target = table.predict(space.uniform(1.0))
    kw = dict(lr=0.1, warmup_epochs=0.5, verbose=0, tensorboard=False, summary=False)

    def data():
        return load_data("digits", space, 32, train_limit=128, eval_limit=32)

    def cb(run):
        return AOWSCallback(space, table.chain(), target, 4 * data().steps_per_epoch, run)

    ref = train(space, data(), tmp_path / "ref", 4, extra_callbacks=[cb(tmp_path / "ref")], **kw)
    with pytest.raises(KeyboardInterrupt):
        train(space, data(), tmp_path / "run", 4, extra_callbacks=[cb(tmp_path / "run"), _Kill(epoch=2, batch=1)], **kw)
    res = train(space, data(), tmp_path / "run", 4, extra_callbacks=[cb(tmp_path / "run")], resume=True, **kw)
    a, b = _entropies(tmp_path / "ref"), _entropies(tmp_path / "run")
    assert [e[0] for e in b] == [1, 2, 3, 4]
    for (ea, wa, ha, pa), (eb, wb, hb, pb) in zip(a, b):
        assert (ea, wa) == (eb, wb) and ha == pytest.approx(hb, abs=1e-4)
        for x, y in zip(pa, pb):
            np.testing.assert_allclose(x, y, atol=1e-4)
    np.testing.assert_allclose(res.model.sampling_probs.numpy(), ref.model.sampling_probs.numpy(), atol=1e-4)


def test_regression_at_t_times_layers_equals_split_means_at_t():
    """On a balanced design (every configuration once) and an additive loss increase, the split means' contrasts are
    1/L of the regression's, so their marginals at T equal the regression's at T * L."""
    import itertools
    from tfwidth.stats import WidthStats
    space = tiny_space(levels=3, layers=4)
    rng = np.random.default_rng(0)
    true = [np.append(np.sort(rng.random(k - 1) * 0.3)[::-1], 0.0) for k in space.num_choices]
    ch = np.array(list(itertools.product(*[range(k) for k in space.num_choices])))
    st = WidthStats(space)
    st.update(ch, np.array([sum(true[l][c] for l, c in enumerate(row)) for row in ch]))
    _, table = _problem(space)
    a_mean, a_reg = acc_chain(space, st.costs(estimator="mean")), acc_chain(space, st.costs(estimator="regression"))
    L = space.num_layers
    for T, gamma in ((0.05, 0.3), (0.01, 1.0)):
        # the Lagrange multiplier of the same target scales with the costs too
        pm = mrf.marginals(a_mean, table, gamma, T)
        pr = mrf.marginals(a_reg, table, gamma * L, T * L)
        for a, b in zip(pm, pr):
            np.testing.assert_allclose(a, b, atol=2e-3)
    # end to end: the callback's choice of scale gives the sampling the paper's schedule meant
    mid = table.total(space.to_indices(space.uniform(0.75)))
    sm = aows.sampling_state(space, st.costs(estimator="mean"), table, mid, 0.6)
    sr = aows.sampling_state(space, st.costs(estimator="regression"), table, mid, 0.6, scale=L)
    assert sr.widths == sm.widths
    for a, b in zip(sm.probs, sr.probs):
        np.testing.assert_allclose(a, b, atol=2e-2)
