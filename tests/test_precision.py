"""--mixed-precision on this CPU: the bfloat16 supernet at fixed widths equals the float32 plain model within
bfloat16's tolerance; training and fine-tuning in bfloat16 follow float32's losses; the float16 path (loss scaling,
what a GPU runs) trains too; the GPU's pointwise form (1x1 conv) computes what the CPU's (matmul) does."""
import json

import numpy as np
import pytest

import tfwidth  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from tfwidth.errors import run_cli
from tfwidth import export, train
from tfwidth.arch import slim
from tfwidth.data import load_data
from tfwidth.space import tiny_space
from tfwidth.supernet import Supernet
from tfwidth.training import mixed_policy, train_supernet

SPACE = tiny_space(resolution=8, levels=3, base=8, layers=4)
CONFIGS = [SPACE.max_widths, SPACE.min_widths, (12, 4, 8, 12)]
KW = dict(lr=0.1, warmup_epochs=0.5, verbose=0, tensorboard=False, validate=False, summary=False)


def _randomised(precision=None):
    """A supernet with the weights and BatchNorm statistics of seed 0 and random BN parameters (fresh ones would
    hide mistakes in the statistics)."""
    net = Supernet(SPACE, seed=0, precision=precision)
    rng = np.random.default_rng(0)
    for b in net.bn_layers():
        c = b.max_channels
        b.gamma.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
        b.beta.assign(rng.normal(0, 0.2, c).astype(np.float32))
        b.moving_mean.assign(rng.normal(0, 0.2, c).astype(np.float32))
        b.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype(np.float32))
    return net


def _images(n=32, seed=1):
    return np.random.default_rng(seed).normal(size=(n, SPACE.resolution, SPACE.resolution, 3)).astype(np.float32)


def test_mixed_policy_on_this_machine_is_bfloat16():
    assert not tf.config.list_logical_devices("GPU")
    assert mixed_policy() == "mixed_bfloat16"


@pytest.mark.parametrize("widths", CONFIGS)
def test_bfloat16_supernet_equals_float32_plain_model(widths):
    plain = _randomised().to_plain(widths)  # float32, the deployable model
    net = _randomised("mixed_bfloat16")
    assert keras.mixed_precision.global_policy().name == "float32"  # the policy was scoped to the supernet
    conv = net.slim_layers()[0]
    assert conv.compute_dtype == "bfloat16" and conv.kernel.dtype == tf.float32
    assert all(b.compute_dtype == "float32" for b in net.bn_layers())
    x = _images()
    for training in (False, True):
        got = net.forward(x, tf.constant(widths), training=training)
        want = plain(x, training=training).numpy()
        assert got.dtype == tf.float32
        err = np.abs(got.numpy() - want).max()
        # bfloat16 keeps 8 bits of mantissa (0.4% per rounding): a few percent of the logits' scale after 8 layers,
        # and not float32's exactness, or the layers did not compute in bfloat16
        assert 1e-6 < err <= 0.03 * np.abs(want).max(), (training, err, np.abs(want).max())
        assert (got.numpy().argmax(1) == want.argmax(1)).mean() >= 0.9


def test_pointwise_conv_form_equals_matmul_form(monkeypatch):
    net = _randomised()
    x = _images(8)
    want = net.forward(x, tf.constant(CONFIGS[2]), training=True).numpy()
    monkeypatch.setattr(slim, "POINTWISE", "conv")
    assert slim.pointwise_form() == "conv"
    got = net.forward(x, tf.constant(CONFIGS[2]), training=True).numpy()  # eager: no trace holds the old form
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _npz(path, n_train=64, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, 8, 8, 3), dtype=np.uint8), y_train=np.arange(n_train) % 10,
             x_test=rng.integers(0, 256, (n_test, 8, 8, 3), dtype=np.uint8), y_test=np.arange(n_test) % 10)
    return path


@pytest.mark.slow
def test_supernet_training_in_16_bits_follows_float32(tmp_path):
    data = load_data(f"npz:{_npz(tmp_path / 'tiny.npz')}", SPACE, 16)
    logs = {}
    for precision in (None, "mixed_bfloat16", "mixed_float16"):
        out = tmp_path / str(precision)
        r = train_supernet(SPACE, data, out, 2, precision=precision, **KW)
        logs[precision] = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
        assert json.loads((out / "ckpt" / "checkpoint.json").read_text())["precision"] == (precision or "float32")
        scaled = isinstance(r.model.optimizer, keras.mixed_precision.LossScaleOptimizer)
        assert scaled == (precision == "mixed_float16")
        assert all(v.dtype == tf.float32 for v in r.model.trainable_variables)
        assert keras.mixed_precision.global_policy().name == "float32"
    for precision, tol in (("mixed_bfloat16", 0.03), ("mixed_float16", 0.01)):
        for a, b in zip(logs[precision], logs[None]):
            for k in ("loss", "max_loss", "min_loss", "rand_loss"):
                assert np.isfinite(a[k]) and a[k] == pytest.approx(b[k], rel=tol), (precision, a["epoch"], k)
            assert a["step"] == b["step"]  # float16: no step skipped by the loss scaling


@pytest.mark.slow
def test_cli_mixed_precision_train_resume_and_export(tmp_path, capsys):
    npz = _npz(tmp_path / "tiny.npz")
    SPACE.save(tmp_path / "space.json")
    base = ["--space", tmp_path / "space.json", "--dataset", f"npz:{npz}", "--batch-size", 16, "--out",
            tmp_path / "run", "--probe-configs", 4, "--probe-images", 16, "--calib-batches", 2, "--quiet"]
    base = list(map(str, base))
    assert run_cli(train.main, base + ["--epochs", "1", "--mixed-precision"]) == 0
    side = json.loads((tmp_path / "run" / "ckpt" / "checkpoint.json").read_text())
    assert side["precision"] == "mixed_bfloat16"
    before = (tmp_path / "run" / "log.jsonl").read_text()
    capsys.readouterr()
    assert run_cli(train.main, base + ["--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mixed_bfloat16" in err[0] and "--mixed-precision" in err[0], err
    assert (tmp_path / "run" / "log.jsonl").read_text() == before
    widths = tmp_path / "w.json"
    widths.write_text(json.dumps({"kind": "widths", "space_hash": SPACE.space_hash, "space": SPACE.to_json(),
                                  "method": "test", "target_ms": 0.5, "widths": [12, 8, 12, 4]}))
    argv = ["--widths", widths, "--run", tmp_path / "run", "--dataset", f"npz:{npz}", "--epochs", 1, "--batch-size",
            16, "--calib-batches", 2, "--mixed-precision", "--no-measure", "--no-progress", "-o", tmp_path / "m.tflite"]
    assert run_cli(export.main, list(map(str, argv))) == 0
    rep = json.loads((tmp_path / "m.report.json").read_text())
    assert rep["training"]["precision"] == "mixed_bfloat16"
    assert np.isfinite(rep["training"]["history"][0]["loss"])
    # the deployed model is float32: the .tflite agrees with it at fp32's bar
    assert rep["agreement"]["within_tolerance"] and rep["tflite"]["input_dtype"] == "float32"
    model = keras.models.load_model(tmp_path / "m.keras")
    assert {l.compute_dtype for l in model.layers if l.weights} == {"float32"}
