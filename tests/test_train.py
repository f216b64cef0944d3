"""tfwidth.train on tiny random data: artefacts, exact resume after a kill, refusals, MirroredStrategy == one device."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tfwidth  # noqa: F401
import tf_keras as keras

from tfwidth.data import load_data
from tfwidth.errors import run_cli
from tfwidth.space import tiny_space
from tfwidth.stats import WidthStats
from tfwidth.train import main, train

ROOT = Path(__file__).resolve().parents[1]
SPACE = tiny_space(resolution=8, levels=3, base=8, layers=4)
BATCH = 16


def _npz(path, n_train=64, n_test=20, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    y_train = np.arange(n_train) % classes
    y_test = np.arange(n_test) % classes
    np.savez(path, x_train=rng.integers(0, 256, (n_train, 8, 8, 3), dtype=np.uint8), y_train=y_train,
             x_test=rng.integers(0, 256, (n_test, 8, 8, 3), dtype=np.uint8), y_test=y_test)
    return path


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return _npz(tmp_path_factory.mktemp("data") / "tiny.npz")


def _data(npz, seed=0):
    return load_data(f"npz:{npz}", SPACE, BATCH, seed=seed)


KW = dict(lr=0.1, warmup_epochs=0.5, verbose=0, tensorboard=False, validate=False, calib_batches=2)


def _state(model):
    return {v.name + str(i): v.numpy() for i, v in enumerate(model.variables)}


class _Narrow(keras.callbacks.Callback):
    """What AOWS does: from epoch 2 on, sample only each layer's narrowest width; and add a value to the logs."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            p = np.zeros((SPACE.num_layers, self.model.kmax))
            p[:, 0] = 1.0
            self.model.set_sampling(p)

    def on_epoch_end(self, epoch, logs=None):
        logs["probe"] = 10.0 + epoch


def test_two_epochs_write_artefacts(npz, tmp_path):
    data = _data(npz)
    res = train(SPACE, data, tmp_path, 2, sampling="all-layers", extra_callbacks=[_Narrow()],
                **dict(KW, tensorboard=True, validate=True))
    for f in ("space.json", "stats.json", "log.jsonl", "summary.json", "ckpt/checkpoint.json"):
        assert (tmp_path / f).exists(), f
    assert any((tmp_path / "tb").rglob("events.out.tfevents*"))
    lines = [json.loads(l) for l in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2]
    assert lines[-1]["step"] == 2 * data.steps_per_epoch
    assert all(np.isfinite(l["loss"]) and l["space_hash"] == SPACE.space_hash for l in lines)
    stats = WidthStats.load(tmp_path / "stats.json", SPACE)
    assert "val_max_top1" in lines[-1]
    # all-layers sampling: every example of every step counts once for each layer, at the batch's width
    assert (stats.count.sum(1) == 2 * data.steps_per_epoch * BATCH).all()
    assert (stats.window_count.sum(1) == data.steps_per_epoch * BATCH).all() and stats.epochs == 2
    np.testing.assert_allclose(stats.sum, res.stats.sum)
    # the sampling hook took effect in epoch 2 (the window), without retracing (checked below)
    assert (stats.window_count[:, 0] == data.steps_per_epoch * BATCH).all()
    assert [l["probe"] for l in lines] == [10.0, 11.0]
    np.testing.assert_array_equal(res.model.sampling_probs.numpy()[:, 0], 1.0)
    side = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert side["epoch"] == 2 and side["space_hash"] == SPACE.space_hash and side["dataset"] == data.name
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["top1"]) == {"max", "min", "uniform_1.0"}
    assert res.model.train_trace_count == 1  # random widths every step, one trace


class _Kill(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.cur = epoch, batch, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.cur = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.cur == self.epoch and batch == self.batch:
            raise KeyboardInterrupt("simulated kill")


def test_resume_after_kill_equals_uninterrupted(npz, tmp_path, sampling="one-layer"):
    # killed at step 2 of epoch 2, resumed from the epoch-1 checkpoint
    ref = train(SPACE, _data(npz), tmp_path / "ref", 2, sampling=sampling, summary=False, **KW)
    with pytest.raises(KeyboardInterrupt):
        train(SPACE, _data(npz), tmp_path / "run", 2, sampling=sampling, summary=False,
              extra_callbacks=[_Kill(epoch=1, batch=1)], **KW)
    assert json.loads((tmp_path / "run/ckpt/checkpoint.json").read_text())["epoch"] == 1
    res = train(SPACE, _data(npz), tmp_path / "run", 2, sampling=sampling, summary=False, resume=True, **KW)
    a, b = _state(ref.model), _state(res.model)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(res.stats.sum, ref.stats.sum, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(res.stats.count, ref.stats.count)
    # one-layer sampling: every example of every step is attributed to exactly one (layer, width)
    assert res.stats.count.sum() == 2 * _data(npz).steps_per_epoch * BATCH
    assert int(res.model.optimizer.iterations.numpy()) == int(ref.model.optimizer.iterations.numpy())
    assert [json.loads(l)["epoch"] for l in (tmp_path / "run/log.jsonl").read_text().splitlines()] == [1, 2]


def _ckpt_bytes(run):
    return {p.name: p.read_bytes() for p in (run / "ckpt").iterdir()}


def test_refusals_leave_the_checkpoint_alone(npz, tmp_path, capsys):
    run = tmp_path / "run"
    base = ["--dataset", f"npz:{npz}", "--batch-size", str(BATCH), "--out", str(run), "--quiet",
            "--calib-batches", "1"]
    SPACE.save(tmp_path / "space.json")
    assert run_cli(main, ["--space", str(tmp_path / "space.json"), "--epochs", "1", *base]) == 0
    before = _ckpt_bytes(run)
    capsys.readouterr()

    def refused(argv, *fragments):
        assert run_cli(main, argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), err
        for f in fragments:
            assert f in err[0], (f, err[0])
        assert _ckpt_bytes(run) == before

    other = tiny_space(resolution=8, levels=4, base=8, layers=4)
    other.save(tmp_path / "other.json")
    refused(["--space", str(tmp_path / "other.json"), "--epochs", "2", "--resume", *base],
            other.space_hash, SPACE.space_hash)
    other_npz = _npz(tmp_path / "other.npz", seed=1)
    argv = ["--space", str(tmp_path / "space.json"), "--epochs", "2", "--resume", *base]
    argv[argv.index(f"npz:{npz}")] = f"npz:{other_npz}"
    refused(argv, "other.npz", "same dataset")
    refused(["--space", str(tmp_path / "space.json"), "--epochs", "2", *base], "--resume")
    argv = ["--space", str(tmp_path / "space.json"), "--epochs", "2", "--resume", *base]
    argv[argv.index(str(run))] = str(tmp_path / "no")
    refused(argv, "no checkpoint")
    if "TF_CONFIG" not in os.environ:
        refused(["--space", str(tmp_path / "space.json"), "--strategy", "multiworker", "--resume", *base],
                "TF_CONFIG")
    eight = tiny_space(resolution=8, levels=3, base=8, layers=4, classes=8)
    eight.save(tmp_path / "eight.json")
    refused(["--space", str(tmp_path / "eight.json"), "--epochs", "2", "--resume", *base], "classes")


MIRRORED = textwrap.dedent("""
    import json, sys
    import tfwidth, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfwidth.data import load_data
    from tfwidth.errors import run_cli
    from tfwidth.space import tiny_space
    from tfwidth.train import main, train
    space = tiny_space(resolution=8, levels=3, base=8, layers=4)
    npz, out = sys.argv[1], sys.argv[2]
    res = {}
    for name, strategy in (("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
                           ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        data = load_data("npz:" + npz, space, 16, train_limit=16)
        r = train(space, data, out + "/" + name, 1, strategy=strategy, summary=False, tensorboard=False,
                  validate=False, verbose=0)
        log = json.loads(open(out + "/" + name + "/log.jsonl").read())
        res[name] = {"replicas": strategy.num_replicas_in_sync, "log": log,
                     "kernel": r.model.pw[0].kernel.numpy().ravel()[:50].tolist(),
                     "stats": r.stats.sum.ravel().tolist()}
    res["bad_batch"] = run_cli(main, ["--dataset", "npz:" + npz, "--strategy", "mirrored", "--batch-size", "1",
                                      "--out", out + "/bad"])
    print("RESULT " + json.dumps(res))
""")


def test_mirrored_two_devices_equals_one(npz, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(npz), str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=300)
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert line, proc.stderr[-3000:]
    r = json.loads(line[0][7:])
    assert r["one"]["replicas"] == 1 and r["two"]["replicas"] == 2
    for k in ("loss", "max_loss", "min_loss", "rand_loss"):
        assert r["two"]["log"][k] == pytest.approx(r["one"]["log"][k], rel=1e-5, abs=1e-6), k
    np.testing.assert_allclose(r["two"]["kernel"], r["one"]["kernel"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(r["two"]["stats"], r["one"]["stats"], rtol=1e-4, atol=1e-5)
    assert r["bad_batch"] == 2
    assert "smaller than the 2 devices" in proc.stderr
    assert not (tmp_path / "bad").exists()
