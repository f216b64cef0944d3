import numpy as np
import pytest

from tfwidth import aows, mrf
from tfwidth.stats import acc_chain
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
    ent = [np.mean(aows.sampling_state(space, costs, lat, mid, p, explore=0.0).entropy()) for p in (0.3, 0.5, 1.0)]
    assert ent[0] > ent[1] > ent[2]
    late = aows.sampling_state(space, costs, lat, mid, 1.0, explore=0.0)
    expect = mrf.marginals(acc_chain(space, costs), lat, late.gamma, late.temperature)
    for a, b in zip(late.probs, expect):
        np.testing.assert_allclose(a, b)
    # at the end the mode of every layer is the OWS configuration
    assert tuple(space.choices[l][int(np.argmax(p))] for l, p in enumerate(late.probs)) == late.widths
    assert late.predicted_ms <= mid + 1e-9


def test_exploration_floor_mixes_the_marginals_with_uniform():
    space = tiny_space()
    costs, lat = _problem(space)
    mid = lat.total(space.to_indices(space.uniform(1.0)))
    paper = aows.sampling_state(space, costs, lat, mid, 1.0, explore=0.0)
    assert min(p.min() for p in paper.probs) < 1e-3  # the paper's sampling starves widths at the end
    assert aows.EXPLORE == 0.5
    st = aows.sampling_state(space, costs, lat, mid, 1.0)  # the default floor
    assert st.explore == 0.5 and st.to_json()["explore"] == 0.5
    for p, q in zip(st.probs, paper.probs):
        k = len(p)
        np.testing.assert_allclose(p, 0.5 * q + 0.5 / k)
        np.testing.assert_allclose(p.sum(), 1.0)
        assert p.min() >= 0.5 / k - 1e-12  # never below half the uniform rate
        assert int(np.argmax(p)) == int(np.argmax(q))  # the mode is still the OWS configuration
    assert (st.widths, st.gamma, st.temperature) == (paper.widths, paper.gamma, paper.temperature)
    assert np.mean(paper.entropy()) < np.mean(st.entropy()) < np.mean([np.log(k) for k in space.num_choices])
    # the warm-up stays uniform whatever the floor; explore=1 is uniform sampling throughout
    assert all(np.allclose(p, 1 / len(p)) for p in aows.sampling_state(space, costs, lat, mid, 0.1).probs)
    assert all(np.allclose(p, 1 / len(p)) for p in aows.sampling_state(space, costs, lat, mid, 1.0, explore=1.0).probs)
    with pytest.raises(ValueError):
        aows.sampling_state(space, costs, lat, mid, 1.0, explore=1.5)


def test_floor_keeps_the_final_answer_trained_under_a_growing_loss_increase():
    """Issue 6: the loss increase the statistics regress grows during training; when sampling shifts from epoch to
    epoch the widths favoured late look costlier and the answer moves away from what was trained. A small
    simulation of the statistics (additive costs + noise, increase x3 over training, the callback's updates): with
    the floor the final answer's widths are drawn more in the last epoch than without it."""
    from tfwidth.stats import WidthStats
    space = tiny_space(levels=6, layers=6)
    g = [np.log(c[-1]) - np.log(np.asarray(c, float)) for c in space.choices]
    true = [0.05 * x for x in g]
    lat = space.mac_chain().scale(1e-6)
    target = lat.total(space.to_indices(space.uniform(0.75)))
    L, epochs, spe = space.num_layers, 8, 60
    trend = np.linspace(1 / 3, 1.0, epochs)

    def share(explore, seed):
        r = np.random.default_rng(seed)
        st = WidthStats(space)
        P = [np.full(k, 1 / k) for k in space.num_choices]
        for e in range(epochs):
            c = st.costs() if st.has_regression() else [np.zeros(k) for k in space.num_choices]
            P = aows.sampling_state(space, c, lat, target, e / epochs, scale=L, explore=explore).probs
            idx = np.stack([r.choice(len(p), size=spe, p=p) for p in P], 1)
            d = trend[e] * np.array([sum(true[l][i] for l, i in enumerate(row)) for row in idx])
            st.update(idx, d + 0.1 * r.standard_normal(spe))
            st.end_epoch()
        ans = mrf.ows(acc_chain(space, st.costs()), lat, target).indices
        return float(np.exp(np.mean([np.log(P[l][i] * len(P[l])) for l, i in enumerate(ans)])))

    floor = [share(aows.EXPLORE, s) for s in range(6)]
    paper = [share(0.0, s) for s in range(6)]
    assert min(floor) >= 0.5 - 1e-9  # guaranteed by the floor
    # geometric means over layers and runs: ~1.55 with the floor, ~1.20 without (this seed set)
    assert np.mean(np.log(floor)) > np.mean(np.log(paper)) + 0.1
    assert np.exp(np.mean(np.log(floor))) > 1.3 and min(floor) > min(paper)


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
    # once the temperature has fallen (epochs 3-4) every epoch samples more narrowly than the warm-up did, and
    # no width is drawn at less than half the uniform rate (the default exploration floor)
    assert max(e[2] for e in ent[2:]) < ent[0][2] - 0.01
    for _, warm, _, probs in ent:
        assert min(min(p) * len(p) for p in probs) >= (1.0 if warm else aows.EXPLORE) - 1e-4
    # bad input: --aows without a target, a target no configuration meets
    bad = [str(a) for a in args[:-2]] + ["--out", str(tmp_path / "r2")]
    assert_usage_error(run_module("tfwidth.train", *bad), "--aows needs")
    low = [str(a) for a in args[:-1]] + ["0.001"]
    low[low.index("--out") + 1] = str(tmp_path / "r3")
    assert_usage_error(run_module("tfwidth.train", *low), "below the fastest")


@pytest.mark.parametrize("live_probe", [False, True])
def test_aows_resume_keeps_the_schedule(tmp_path, live_probe):
    from tests.test_train import _Kill
    from tfwidth import probe
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
        live = probe.fixed_batches(data(), 64) if live_probe else None
        return AOWSCallback(space, table.chain(), target, 4 * data().steps_per_epoch, run, probe_batches=live,
                            probe_configs=30, seed=3)

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


def test_live_probe_sets_the_marginals_of_the_supernet_as_it_is():
    """After the warm-up, the callback's distributions are those of the costs measured on the model at that step
    (configurations drawn from the seed and step), not of the statistics accumulated in training."""
    import tfwidth  # noqa: F401
    import tf_keras as keras
    from tfwidth import probe
    from tfwidth.aows import AOWSCallback
    from tfwidth.stats import WidthStats
    from tfwidth.supernet import Supernet
    space = tiny_space(resolution=8, classes=10, levels=4, base=8, layers=4)
    lat = space.mac_chain().scale(1e-4)
    target = lat.total(space.to_indices(space.uniform(0.75)))
    net = Supernet(space)
    net.compile(optimizer=keras.optimizers.SGD(0.1))
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(8, 8, 8, 3)).astype(np.float32), rng.integers(0, 10, 8).astype(np.int32))
               for _ in range(2)]
    # the accumulated statistics say the opposite of anything real: wide is costly
    st = WidthStats(space)
    ch = probe.draw_configs(space, 64, 5)
    st.update(ch, ch.sum(1).astype(float))
    net.stats_xtx.assign(st.current_xtx)
    net.stats_xty.assign(st.current_xty)
    schedule = ((0.0, 1.0), (0.0, 1.0), (1.0, 0.1))  # no warm-up: the first update is adaptive
    cb = AOWSCallback(space, lat, target, 10, None, schedule=schedule, probe_batches=batches, probe_configs=40,
                      seed=7)
    cb.set_model(net)
    cb.on_epoch_begin(0)
    choices = probe.draw_configs(space, 40, 7 * 1_000_003 + 0)
    delta, _ = probe.measure(net, batches, choices)
    live = WidthStats(space)
    live.set_probe(choices, delta, {})
    want = aows.sampling_state(space, live.costs("probe"), lat, target, 0.0, schedule, scale=space.num_layers)
    for a, b in zip(cb.state.probs, want.probs):
        np.testing.assert_allclose(a, b, atol=1e-9)
    assert cb.state.widths == want.widths and cb.probed["configs"] == 40
    np.testing.assert_allclose(net.sampling_probs.numpy(), want.padded(net.kmax), atol=1e-6)


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


def test_aows_callback_is_the_sampler_the_cli_trains_with(tmp_path):
    """tfwidth.train.aows_callback: the live probe measures the images the data holds out (or, asked, its first
    training images), none without a live probe; a target below the fastest configuration is refused."""
    from tfwidth import mrf, probe
    from tfwidth.data import load_data
    from tfwidth.errors import UsageError
    from tfwidth.train import aows_callback
    space = tiny_space(resolution=8, classes=10, levels=4, base=8, layers=4)
    table = _table(space, tmp_path / "table.json")
    data = load_data("digits", space, 32, train_limit=160, eval_limit=32, holdout=64)
    target = table.predict(space.uniform(1.0))
    cb = aows_callback(space, data, table, target, 40, tmp_path / "run", every=3, probe_configs=5, probe_images=64,
                       seed=3)
    assert (cb.target_ms, cb.total_steps, cb.every, cb.probe_configs, cb.seed) == (target, 40, 3, 5, 3)
    for got, want in ((cb.probe_batches, data.holdout_batches()),
                      (aows_callback(space, data, table, target, 40, None, probe_configs=5, probe_images=64,
                                     probe_holdout=False).probe_batches, probe.fixed_batches(data, 64))):
        assert len(got) == len(want) and all(np.array_equal(a[0], b[0]) for a, b in zip(got, want))
    off = aows_callback(space, data, table, target, 40, None, probe_configs=0)
    assert off.probe_batches is None and off.probe_configs == 1
    with pytest.raises(UsageError, match="below the fastest"):
        aows_callback(space, data, table, 0.5 * mrf.min_total(table.chain())[1], 40, None)
