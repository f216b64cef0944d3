"""tfwidth.probe: the loss increase of configurations of a trained supernet on fixed images -> the probe view."""
import json

import numpy as np
import pytest

import tfwidth  # noqa: F401
import tensorflow as tf

from tfwidth import probe
from tfwidth.errors import UsageError
from tfwidth.space import tiny_space
from tfwidth.stats import WidthStats
from tfwidth.supernet import Supernet

SPACE = tiny_space(resolution=8, levels=3, base=8, layers=4)


def _batches(n_batches=2, size=5, seed=3):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(size, 8, 8, 3)).astype(np.float32), rng.integers(0, SPACE.classes, size).astype(np.int32))
            for _ in range(n_batches)]


def test_draw_configs_is_seeded_and_in_range():
    a, b, c = probe.draw_configs(SPACE, 50, 1), probe.draw_configs(SPACE, 50, 1), probe.draw_configs(SPACE, 50, 2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (50, SPACE.num_layers)
    assert all(0 <= a[:, l].min() and a[:, l].max() < k for l, k in enumerate(SPACE.num_choices))


def test_measure_equals_plain_models_in_training_mode():
    """Each delta is the plain Keras model's mean cross-entropy at those widths (BatchNorm on the batch's own
    statistics), over all images, minus the max network's."""
    tf.random.set_seed(0)
    net = Supernet(SPACE)
    batches = _batches()
    choices = probe.draw_configs(SPACE, 4, 0)

    def plain_loss(widths):
        m = net.to_plain(widths)
        ce = [tf.nn.sparse_softmax_cross_entropy_with_logits(y, m(x, training=True)).numpy() for x, y in batches]
        return float(np.concatenate(ce).mean())

    delta, base = probe.measure(net, batches, choices)
    assert base == pytest.approx(plain_loss(SPACE.max_widths), rel=1e-5)
    for c, d in zip(choices, delta):
        assert d == pytest.approx(plain_loss(SPACE.to_widths(tuple(int(v) for v in c))) - base, abs=1e-5)


def _additive_truth(rng):
    # non-increasing in width, 0 at the max: what the regression can represent exactly
    return [np.append(np.cumsum(rng.uniform(0.1, 1.0, k - 1)[::-1])[::-1], 0.0) for k in SPACE.num_choices]


def test_probe_view_recovers_additive_costs_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    truth = _additive_truth(rng)
    choices = probe.draw_configs(SPACE, 200, 0)
    delta = np.array([sum(truth[l][c[l]] for l in range(SPACE.num_layers)) for c in choices])
    st = WidthStats(SPACE)
    st.update(choices[:50], rng.normal(size=50))  # training statistics: noise, must not be what auto picks
    st.end_epoch()
    assert st.resolve_view("auto") == "running"
    st.set_probe(choices, delta, {"configs": 200, "images": 10, "seed": 0, "epochs": 1})
    assert st.resolve_view("auto") == "probe"
    got = st.costs()
    for g, t in zip(got, truth):
        np.testing.assert_allclose(g, t, atol=2e-3)
    st.save(tmp_path / "stats.json")
    back = WidthStats.load(tmp_path / "stats.json", SPACE)
    assert back.probe_info == st.probe_info
    for g, b in zip(got, back.costs("auto")):
        np.testing.assert_allclose(b, g, atol=1e-9)
    for g, b in zip(st.costs("running"), back.costs("running")):
        np.testing.assert_allclose(b, g, atol=1e-9)


def test_probe_view_missing_is_a_clear_error_and_old_files_still_load(tmp_path):
    st = WidthStats(SPACE)
    st.update(probe.draw_configs(SPACE, 20, 0), np.ones(20))
    st.end_epoch()
    with pytest.raises(UsageError, match="no probe"):
        st.costs("probe")
    d = st.to_json()
    del d["probe"]  # written by a tfwidth before the probe
    (tmp_path / "old.json").write_text(json.dumps(d))
    old = WidthStats.load(tmp_path / "old.json", SPACE)
    assert not old.has_probe() and old.resolve_view("auto") == "running"


def test_is_current_needs_same_epochs_settings_and_images():
    st = WidthStats(SPACE)
    st.end_epoch()
    batches = _batches()
    assert not probe.is_current(st, 10, 0, batches)
    st.set_probe(probe.draw_configs(SPACE, 10, 0), np.zeros(10), {"configs": 10, "images": 10, "seed": 0, "epochs": 1})
    assert probe.is_current(st, 10, 0, batches)
    assert not probe.is_current(st, 11, 0, batches)
    assert not probe.is_current(st, 10, 1, batches)
    assert not probe.is_current(st, 10, 0, batches[:1])
    st.end_epoch()  # trained further: the probe is of older weights
    assert not probe.is_current(st, 10, 0, batches)


def test_cli_refuses_a_run_without_statistics(runmod, tmp_path):
    from conftest import assert_usage_error
    assert_usage_error(runmod("tfwidth.probe", "--run", tmp_path / "nope", "--dataset", "digits"), "stats.json",
                       "tfwidth.train")


def test_training_ends_with_a_probe_that_a_resume_keeps(tmp_path, monkeypatch):
    from tfwidth.data import load_data
    from tfwidth.train import train
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (48, 8, 8, 3), dtype=np.uint8), y_train=np.arange(48) % 10,
             x_test=rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8), y_test=np.arange(16) % 10)
    data = load_data(f"npz:{path}", SPACE, 16, seed=0)
    kw = dict(lr=0.1, verbose=0, tensorboard=False, validate=False, summary=False, sampling="all-layers",
              probe_configs=12, probe_images=32)
    res = train(SPACE, data, tmp_path / "run", 1, **kw)
    st = WidthStats.load(tmp_path / "run" / "stats.json", SPACE)
    assert st.probe_info["configs"] == 12 and st.probe_info["images"] == 32 and st.probe_info["epochs"] == 1
    assert st.resolve_view("auto") == "probe"
    for a, b in zip(res.stats.costs(), st.costs()):
        np.testing.assert_allclose(a, b, atol=1e-9)

    def fail(*a, **k):
        raise AssertionError("probed again although the probe is current")
    monkeypatch.setattr(probe, "probe_run", fail)
    again = train(SPACE, data, tmp_path / "run", 1, resume=True, **kw)
    assert again.stats.probe_info == st.probe_info


def _shape_truth(rng):
    """Additive costs plus a shape cost per adjacent pair: what the pairwise estimator can represent exactly."""
    from tfwidth.stats import shape_features
    unary = _additive_truth(rng)
    beta = rng.uniform(0.05, 0.5, SPACE.num_layers - 1)

    def total(ch):
        return np.array([sum(unary[l][c[l]] for l in range(SPACE.num_layers)) for c in ch]) \
            + shape_features(SPACE, ch) @ beta
    return unary, beta, total


def test_pairwise_estimator_recovers_shape_costs_and_solves_like_brute_force(tmp_path):
    import itertools
    from tfwidth.latency import LatencyTable
    from tfwidth.solve import solve
    rng = np.random.default_rng(1)
    unary, beta, total = _shape_truth(rng)
    choices = probe.draw_configs(SPACE, 300, 0)
    st = WidthStats(SPACE)
    st.set_probe(choices, total(choices), {"configs": 300, "images": 10, "seed": 0, "epochs": 0})
    got = st.costs("probe", "pairwise")
    everything = np.array(list(itertools.product(*[range(k) for k in SPACE.num_choices])))
    np.testing.assert_allclose([got.total(tuple(c)) for c in everything], total(everything), atol=5e-3)
    # the additive regression cannot represent the shape term: it is off somewhere by more
    add = st.costs("probe", "regression")
    assert np.max(np.abs([sum(add[l][c[l]] for l in range(SPACE.num_layers)) for c in everything]
                         - total(everything))) > 0.05
    # round trip keeps the raw measurements, hence the same pairwise costs
    st.save(tmp_path / "stats.json")
    back = WidthStats.load(tmp_path / "stats.json", SPACE).costs("probe", "pairwise")
    for a, b in zip(got.unary + got.pairwise, back.unary + back.pairwise):
        np.testing.assert_allclose(a, b, atol=1e-12)
    # the solver takes the pairwise costs: exact == brute force over every configuration within the target
    mac = SPACE.mac_chain().scale(1e-4)
    table = LatencyTable(SPACE, mac.unary[0], mac.pairwise, mac.unary[-1], const=0.05, format="fp32")
    lat = np.array([table.predict(SPACE.to_widths(tuple(c))) for c in everything])
    loss = np.array([got.total(tuple(c)) for c in everything])
    for mult in (0.5, 0.75):
        target = table.predict(SPACE.uniform(mult))
        sol = solve(SPACE, got, table, target, "exact")
        ok = lat <= target * (1 + 1e-9)
        assert got.total(sol.indices) == pytest.approx(loss[ok].min(), abs=1e-9)


def test_pairwise_needs_raw_probe_data():
    st = WidthStats(SPACE)
    st.update(probe.draw_configs(SPACE, 20, 0), np.ones(20))
    st.end_epoch()
    with pytest.raises(UsageError, match="raw measurements"):
        st.costs("running", "pairwise")


def test_probe_holdout_measures_images_kept_out_of_training(tmp_path, runmod):
    """--probe-holdout: the probe measures exactly the held-out images; the probe CLI reads the holdout from the run;
    a resume that would train on other images is refused in one line."""
    from conftest import assert_usage_error
    from tfwidth.data import load_data
    from tfwidth.training import load_supernet
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8), y_train=np.arange(64) % 10,
             x_test=rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8), y_test=np.arange(16) % 10)
    SPACE.save(tmp_path / "space.json")
    common = ["--space", tmp_path / "space.json", "--dataset", f"npz:{path}", "--batch-size", "16", "--epochs", "1",
              "--quiet", "--probe-configs", "6", "--probe-images", "32"]
    proc = runmod("tfwidth.train", *common, "--out", tmp_path / "run", "--probe-holdout")
    assert proc.returncode == 0, proc.stderr[-2000:]
    st = WidthStats.load(tmp_path / "run" / "stats.json", SPACE)
    assert st.probe_info["source"].endswith("held out of training") and st.probe_info["images"] == 32
    # the same deltas as measuring the trained supernet on the last 32 training images directly
    data = load_data(f"npz:{path}", SPACE, 16, holdout=32)
    delta, _ = probe.measure(load_supernet(tmp_path / "run", SPACE), data.holdout_batches(), st.probe_choices)
    np.testing.assert_allclose(delta, st.probe_delta, atol=1e-5)
    proc = runmod("tfwidth.probe", "--run", tmp_path / "run", "--dataset", f"npz:{path}", "--configs", "6",
                  "--images", "32", "--batch-size", "16", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = WidthStats.load(tmp_path / "run" / "stats.json", SPACE)
    assert again.probe_info["source"] == st.probe_info["source"]
    np.testing.assert_allclose(again.probe_delta, st.probe_delta, atol=1e-5)
    # the probe stage's library function measures what its CLI measured
    direct = probe.probe_supernet(tmp_path / "run", f"npz:{path}", configs=6, images=32, batch_size=16,
                                  progress=False)
    assert direct.probe_info["source"] == st.probe_info["source"] and direct.probe_info["configs"] == 6
    np.testing.assert_allclose(direct.probe_delta, st.probe_delta, atol=1e-5)
    assert_usage_error(runmod("tfwidth.train", *common, "--out", tmp_path / "run", "--resume", "--epochs", "2"),
                       "--probe-holdout")
