"""MobileNetV2 (tfwidth/arch/mobilenet_v2.py): the space against the paper and Keras's own MobileNetV2, the tree of
width variables, residual-tied widths in the plain model, the supernet and the template against the plain model, and
the latency fit and the solvers on the tree."""
import itertools

import numpy as np
import pytest

import tfwidth  # noqa: F401
from tfwidth import mrf
from tfwidth.arch.mobilenet_v2 import STAGES
from tfwidth.errors import UsageError
from tfwidth.space import SearchSpace, preset

from conftest import assert_usage_error, run_module, tiny_v2

TINY = tiny_v2()


def _is_tree(n, edges):
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i
    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra == rb:
            return False
        parent[ra] = rb
    return len(edges) == n - 1


def test_the_preset_is_the_papers_network():
    s = preset("mobilenet_v2")
    names = s.layer_names
    assert len(names) == 25 and names[:4] == ("stem", "stage1", "expand2", "stage2") and names[-1] == "last"
    assert sum(n.startswith("expand") for n in names) == 16 and sum(n.startswith("stage") for n in names) == 7
    base = dict(zip(names, s.base_widths))
    assert [base[f"stage{i}"] for i in range(1, 8)] == [c for _, c, _, _ in STAGES]
    assert (base["stem"], base["last"]) == (32, 1280)
    # an expansion's base is t times its block's input: the previous stage's width in a stage's first block
    assert (base["expand2"], base["expand3"], base["expand4"], base["expand17"]) == (6 * 16, 6 * 24, 6 * 24, 6 * 160)
    assert s.feature_sizes()[-1] == 7 and preset("mobilenet_v2_cifar").feature_sizes()[-1] == 4
    assert all(c[0] >= 8 and all(x % 8 == 0 for x in c) for c in s.choices)
    assert _is_tree(25, s.edges) and not s.architecture.edges(s) == tuple((i, i + 1) for i in range(24))
    # every artefact records its space's hash: pinned as first released
    assert (s.space_hash, preset("mobilenet_v2_cifar").space_hash) == ("c97195e884f08557", "a3bbbf3865553804")


def test_parameters_equal_keras_applications_mobilenet_v2():
    """The reference: tf_keras's own MobileNetV2 (weights=None, nothing downloaded) at width 1.0 has the same
    weights as ours at the base widths, BatchNorm counted as 4 per channel there and folded into 1 here."""
    import tf_keras as keras
    s = preset("mobilenet_v2")
    ref = keras.applications.MobileNetV2(weights=None, alpha=1.0, input_shape=(224, 224, 3), classes=1000)
    bn = sum(l.gamma.shape[0] for l in ref.layers if isinstance(l, keras.layers.BatchNormalization))
    assert s.params(s.base_widths) == ref.count_params() - 3 * bn
    ours = s.architecture.build(s, s.base_widths)
    assert sum(isinstance(l, keras.layers.Add) for l in ours.layers) == sum(
        isinstance(l, keras.layers.Add) for l in ref.layers) == 10


def test_residual_adds_join_the_stage_width():
    import tf_keras as keras
    s = TINY
    rng = np.random.default_rng(0)
    names = s.layer_names
    for _ in range(3):
        w = s.random_widths(rng)
        m = s.architecture.build(s, w)
        adds = [l for l in m.layers if isinstance(l, keras.layers.Add)]
        assert [l.name for l in adds] == ["b3_add", "b5_add", "b6_add"]
        for l in adds:
            stage = "stage2" if l.name == "b3_add" else "stage3"
            assert [t.shape[-1] for t in l.input] == [w[names.index(stage)]] * 2


def test_bad_spaces_are_refused_in_one_line():
    d = TINY.to_dict()
    with pytest.raises(UsageError, match=r"has 3, 6, 10, 15, 19, 23, 25 width variables .*got 9"):
        SearchSpace(**{**d, "base_widths": d["base_widths"][:9], "strides": d["strides"][:9]})
    with pytest.raises(UsageError, match="strides .* are inconsistent"):
        SearchSpace(**{**d, "strides": [1] * 4 + [2] + [1] * 5})  # expand3: a later block of its stage at stride 2
    p = run_module("tfwidth.space", "--preset", "mobilenet_v2_cifar", "--levels", "0")
    assert_usage_error(p, "--levels")


def test_cli_describes_the_v2_presets(tmp_path):
    p = run_module("tfwidth.space", "--preset", "mobilenet_v2_cifar", "-o", tmp_path / "s.json")
    assert p.returncode == 0, p.stderr
    assert "expand17" in p.stdout and "4x4" in p.stdout
    assert SearchSpace.load(tmp_path / "s.json") == preset("mobilenet_v2_cifar")


# ---- supernet --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def net():
    import tensorflow as tf
    from tfwidth.supernet import Supernet
    tf.random.set_seed(0)
    model = Supernet(TINY)
    rng = np.random.default_rng(0)
    for b in model.bn_layers():  # fresh BatchNorm would hide slicing mistakes in the statistics
        c = b.max_channels
        b.gamma.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
        b.beta.assign(rng.normal(0, 0.2, c).astype(np.float32))
        b.moving_mean.assign(rng.normal(0, 0.2, c).astype(np.float32))
        b.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype(np.float32))
    return model


def _configs():
    rng = np.random.default_rng(7)
    return [TINY.max_widths, TINY.min_widths] + [TINY.random_widths(rng) for _ in range(3)]


def test_supernet_equals_the_plain_model_with_sliced_weights(net):
    import tensorflow as tf
    x = np.random.default_rng(1).normal(size=(6, 16, 16, 3)).astype(np.float32)
    for w in _configs():
        plain = net.to_plain(w)
        for training in (False, True):
            np.testing.assert_allclose(net.forward(x, tf.constant(w), training=training).numpy(),
                                       plain(x, training=training).numpy(), atol=1e-5, rtol=1e-5)


def test_per_example_masks_through_the_residual_adds_equal_slicing(net):
    """Each example masked to its own widths (stage widths masked on both sides of every add) computes what the
    network sliced to those widths computes, in inference mode and, batch by batch, in training mode."""
    import tensorflow as tf
    x = np.random.default_rng(2).normal(size=(4, 16, 16, 3)).astype(np.float32)
    cs = _configs()
    for training in (False, True):
        for w in cs:
            ex = tf.constant(np.tile(w, (len(x), 1)), tf.int32)
            np.testing.assert_allclose(
                net.forward(x, tf.constant(TINY.max_widths), training=training, ex_widths=ex).numpy(),
                net.forward(x, tf.constant(w), training=training).numpy(), atol=1e-5, rtol=1e-5)
    ex = np.array([cs[i % len(cs)] for i in range(4)], np.int32)
    mixed = net.forward(x, tf.constant(TINY.max_widths), ex_widths=tf.constant(ex)).numpy()
    for i in range(4):
        np.testing.assert_allclose(mixed[i], net.forward(x[i:i + 1], tf.constant(ex[i])).numpy()[0], atol=1e-5)


# ---- template ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["fp32", "int8"])
def test_variants_cut_through_the_adds_equal_a_direct_conversion(fmt):
    """The device cuts a stage's tensors together on both sides of its residual adds: the variant has the op types
    and tensor shapes of the same-width model converted directly, and computes what it computes."""
    from tfwidth.profile import template_model
    from test_variants import check_variants_equal_conversions
    check_variants_equal_conversions(TINY, template_model(TINY, seed=3), fmt, np.random.default_rng(0))


# ---- latency and solvers on the tree -----------------------------------------------------------------------------
def _true_table(space, seed=0):
    """A random table, monotone in every width, one array per term laid out as table.json holds them."""
    from tfwidth.latency import LatencyTable
    rng = np.random.default_rng(seed)
    ks = space.num_choices
    terms = []
    for t in space.architecture.latency_terms(space):
        a = np.cumsum(rng.uniform(0.02, 0.3, ks[t.variables[0]]))
        if len(t.variables) == 2:
            a = np.cumsum(np.cumsum(rng.uniform(0.02, 0.3, (ks[t.variables[0]], ks[t.variables[1]])), 0), 1)
        terms.append(a)
    # grouped as table.json holds them: a slice of terms is a list of arrays
    return LatencyTable(space, *[terms[at] for _, at in space.architecture.table_layout(space)])


def test_the_latency_fit_recovers_a_tree_table():
    import tfwidth.latency as L
    from test_latency import make_samples
    truth = _true_table(TINY)
    table, _ = L.fit_table(make_samples(TINY, truth, 600), TINY)
    m = L.evaluate(table, make_samples(TINY, truth, 200, seed=2))
    assert m["max_rel_err"] < 1e-3
    cost = table.chain()
    assert cost.edges == TINY.edges
    idx = np.random.default_rng(3).integers(0, 2, (20, TINY.num_layers))
    np.testing.assert_allclose([cost.total(i) for i in idx], table.predict_indices(idx), rtol=1e-12)


def test_exact_and_ows_on_the_tree_equal_brute_force():
    truth = _true_table(TINY, seed=4).chain()
    rng = np.random.default_rng(5)
    score = mrf.GraphCost(tuple(np.sort(rng.normal(size=k)) for k in TINY.num_choices),
                          tuple(rng.normal(0, 0.2, (TINY.num_choices[a], TINY.num_choices[b])) for a, b in TINY.edges),
                          TINY.edges)
    allidx = np.array(list(itertools.product(*[range(k) for k in TINY.num_choices])))
    lat = np.array([truth.total(i) for i in allidx])
    acc = np.array([score.total(i) for i in allidx])
    for q in (0.1, 0.5, 0.9):
        target = float(np.quantile(lat, q))
        best = acc[lat <= target].max()
        sol = mrf.exact(score, truth, target)
        assert sol.latency <= target + 1e-9 and sol.objective == pytest.approx(best, abs=1e-9) and sol.certified
        o = mrf.ows(score, truth, target)
        assert o.latency <= target + 1e-9 and o.objective <= best + 1e-9
        assert mrf.greedy(score, truth, target).objective <= best + 1e-9


# ---- export -------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_export_qat_through_the_adds_verifies_and_saves_a_plain_keras_model(tmp_path):
    """Through the export CLI on digits (8x8): a plain MobileNetV2 at the widths, trained quantization-aware (tfmot
    wraps the residual adds too), converted to int8 and verified against Keras; the saved .keras loads with tf_keras
    alone, without tfwidth. (Post-training int8 of V2 is converted in the variants test above.)"""
    import json
    import subprocess
    import sys
    from tfwidth.artifacts import write_json
    from tfwidth.export import main
    space = tiny_v2(resolution=8)
    widths = space.random_widths(np.random.default_rng(1))
    wfile = tmp_path / "w.json"
    write_json(wfile, {"kind": "widths", "space_hash": space.space_hash, "space": space.to_json(), "method": "test",
                       "target_ms": 0.5, "widths": list(widths)})
    code = main(["--widths", str(wfile), "--run", str(tmp_path / "run"), "--dataset", "digits", "--init", "scratch",
                 "--epochs", "0", "--qat-epochs", "1", "--train-limit", "64", "--batch-size", "32", "--format", "qat",
                 "--io", "int8", "--no-measure", "--no-progress", "-o", str(tmp_path / "m.tflite")])
    assert code == 0
    r = json.loads((tmp_path / "m.report.json").read_text())
    assert r["format"] == "qat" and r["keras"]["model"] == "qat" and r["tflite"]["input_dtype"] == "int8"
    assert r["agreement"]["top1_agreement"] >= 0.9, r["agreement"]
    probe = ("import sys, tf_keras as k; m = k.models.load_model(sys.argv[1]); "
             "print([l.name for l in m.layers if l.name.endswith('_add')], "
             "any(n.startswith('tfwidth') for n in sys.modules))")
    p = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "m.keras")], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "['b3_add', 'b5_add', 'b6_add'] False"


def test_clis_take_a_preset_instead_of_a_space_file(tmp_path):
    from tfwidth.profile import load_plan
    p = run_module("tfwidth.profile", "plan", "--preset", "mobilenet_v2_cifar", "--count", "3", "-o", tmp_path / "p.json")
    assert p.returncode == 0, p.stderr
    assert load_plan(tmp_path / "p.json", preset("mobilenet_v2_cifar"))["reference"] == list(
        preset("mobilenet_v2_cifar").base_widths)
    assert_usage_error(run_module("tfwidth.profile", "plan", "--preset", "mobilenet_v3", "--count", "3", "-o",
                                  tmp_path / "q.json"), "unknown preset 'mobilenet_v3'", "mobilenet_v2_cifar")
    assert_usage_error(run_module("tfwidth.profile", "plan", "--count", "3", "-o", tmp_path / "q.json"),
                       "--space", "--preset")
    assert not (tmp_path / "q.json").exists()


@pytest.mark.slow
def test_the_pipeline_runs_a_v2_space_end_to_end(tmp_path):
    """Every stage on a small MobileNetV2 space (the settings of tests/test_pipeline.py): template through the adds,
    profiling, the fit and refinement on the tree, supernet, probe, every solver, export."""
    from test_pipeline import QUICK
    space = tiny_v2(resolution=8)
    space.save(tmp_path / "space.json")
    work = tmp_path / "work"
    p = run_module("tfwidth.pipeline", "--space", tmp_path / "space.json", "--work", work, *QUICK,
                   "--method", "all")
    assert p.returncode == 0, p.stderr[-3000:]
    import json
    widths = json.loads((work / "widths.json").read_text())
    assert widths["space_hash"] == space.space_hash
    assert {r["method"] for r in widths["results"]} == {"ows", "exact", "greedy", "uniform"}
    space.validate(widths["widths"])
    report = json.loads((work / "model_fp32.report.json").read_text())
    assert report["agreement"]["within_tolerance"] and report["widths"] == widths["widths"]
