import numpy as np
import pytest

from tests.conftest import assert_usage_error, run_module
from tfwidth.data import load_data
from tfwidth.errors import UsageError
from tfwidth.space import tiny_space


def _npz(path, n=40, m=12, classes=3, side=12, **override):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8),
                  y_train=np.arange(n) % classes,
                  x_test=rng.integers(0, 256, (m, side, side, 3), dtype=np.uint8),
                  y_test=np.arange(m) % classes)
    arrays.update(override)
    np.savez(path, **arrays)
    return arrays


def test_digits_real_offline_data():
    d = load_data("digits", tiny_space(resolution=16, classes=10), 32, train_limit=200, eval_limit=50)
    x, y = next(iter(d.train_epoch(0)))
    assert x.shape == (32, 16, 16, 3) and x.dtype.name == "float32"
    assert -1.0 <= float(x.numpy().min()) and float(x.numpy().max()) <= 1.0
    xe, ye = d.eval_arrays()
    assert xe.shape == (50, 16, 16, 3) and set(ye) <= set(range(10))
    assert d.steps_per_epoch == 200 // 32


def test_epochs_are_a_pure_function_of_seed_and_epoch(tmp_path):
    _npz(tmp_path / "a.npz")
    d = load_data(f"npz:{tmp_path / 'a.npz'}", tiny_space(resolution=12, classes=3), 8, seed=3)
    whole = [(x.numpy(), y.numpy()) for x, y in d.train_epochs(0, 3)]
    resumed = [(x.numpy(), y.numpy()) for x, y in d.train_epochs(2, 3)]
    assert len(whole) == 3 * d.steps_per_epoch
    for (xa, ya), (xb, yb) in zip(whole[-d.steps_per_epoch:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(whole[0][1], whole[d.steps_per_epoch][1])  # reshuffled per epoch
    other = load_data(f"npz:{tmp_path / 'a.npz'}", tiny_space(resolution=12, classes=3), 8, seed=4)
    assert not np.array_equal(next(iter(other.train_epoch(0)))[0].numpy(), whole[0][0])


def test_npz_eval_is_exact_normalised_pixels(tmp_path):
    a = _npz(tmp_path / "a.npz")
    d = load_data(f"npz:{tmp_path / 'a.npz'}", tiny_space(resolution=12, classes=3), 5)
    x, y = d.eval_arrays()
    np.testing.assert_allclose(x, a["x_test"] / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(y, a["y_test"])


def test_folder_of_pngs(tmp_path):
    import tensorflow as tf
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                tf.io.write_file(str(tmp_path / split / c / f"{i}.png"), tf.io.encode_png(img))
    d = load_data(f"folder:{tmp_path}", tiny_space(resolution=16, classes=2), 4)
    assert (d.num_train, d.num_eval, d.classes) == (12, 4, 2)
    x, y = next(iter(d.train_epoch(0)))
    assert x.shape == (4, 16, 16, 3)
    xe, ye = d.eval_arrays()
    assert xe.shape == (4, 16, 16, 3) and sorted(ye.tolist()) == [0, 0, 1, 1]


def test_folder_eval_limit_takes_every_class(tmp_path):
    # val/ is listed class by class: a limit that took its first files would test on the first classes only
    import tensorflow as tf
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(4):
                tf.io.write_file(str(tmp_path / split / c / f"{i}.png"), tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)))
    d = load_data(f"folder:{tmp_path}", tiny_space(resolution=8, classes=2), 2, eval_limit=4)
    _, ye = d.eval_arrays()
    assert d.num_eval == 4 and set(ye.tolist()) == {0, 1}
    _, again = load_data(f"folder:{tmp_path}", tiny_space(resolution=8, classes=2), 2, eval_limit=4).eval_arrays()
    np.testing.assert_array_equal(ye, again)  # a fixed subset


@pytest.mark.parametrize("override,fragment", [
    (dict(x_train=np.zeros((40, 12), np.uint8)), "x_train has shape"),
    (dict(y_train=np.zeros(39, int)), "y_train has shape"),
    (dict(y_train=np.arange(40) % 3 + 1), "out of range"),
    (dict(y_train=np.arange(40) % 2, y_test=np.arange(12) % 2), "has 2 classes but the space has 3"),
])
def test_npz_bad_arrays(tmp_path, override, fragment):
    _npz(tmp_path / "a.npz", **override)
    with pytest.raises(UsageError, match=fragment):
        load_data(f"npz:{tmp_path / 'a.npz'}", tiny_space(resolution=12, classes=3), 4)


def test_folder_class_mismatch(tmp_path):
    for split, classes in (("train", ("a", "b")), ("val", ("a", "c"))):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
    with pytest.raises(UsageError, match="class folders differ"):
        load_data(f"folder:{tmp_path}", tiny_space(classes=2), 4)


def test_cli_errors_are_one_line(tmp_path):
    assert_usage_error(run_module("tfwidth.data", f"npz:{tmp_path}/missing.npz"), "does not exist")
    assert_usage_error(run_module("tfwidth.data", "imagenet"), "unknown dataset")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert_usage_error(run_module("tfwidth.data", f"npz:{tmp_path}/bad.npz"), "cannot read")
    assert_usage_error(run_module("tfwidth.data", f"folder:{tmp_path}/nope"), "does not exist")
    assert_usage_error(run_module("tfwidth.data", "tfds:mnist"), "tfds")
    _npz(tmp_path / "few.npz", n=3, classes=10)
    assert_usage_error(run_module("tfwidth.data", f"npz:{tmp_path}/few.npz", "--batch-size", "64"), "fewer than one batch")


def test_holdout_keeps_the_last_images_out_of_training(tmp_path):
    a = _npz(tmp_path / "a.npz", n=40)
    space = tiny_space(resolution=12, classes=3)
    d = load_data(f"npz:{tmp_path / 'a.npz'}", space, 8, seed=1, train_limit=36, holdout=16)
    assert d.num_train == 20 and d.steps_per_epoch == 2 and "16 held out" in d.describe()
    held = d.holdout_batches()
    x = np.concatenate([b[0] for b in held])
    np.testing.assert_allclose(x, a["x_train"][20:36] / 127.5 - 1, atol=1e-6)  # in order, not augmented
    np.testing.assert_array_equal(np.concatenate([b[1] for b in held]), a["y_train"][20:36])
    # no training batch of any epoch holds a held-out image (labels would not tell: compare the pixels, unflipped)
    seen = {img.tobytes() for e in range(3) for xb, _ in d.train_epoch(e, augment=False) for img in xb.numpy()}
    assert not seen & {img.tobytes() for img in x}
    with pytest.raises(UsageError, match="at least one batch"):
        load_data(f"npz:{tmp_path / 'a.npz'}", space, 8, holdout=4)
    with pytest.raises(UsageError, match="less than one batch"):
        load_data(f"npz:{tmp_path / 'a.npz'}", space, 8, holdout=36)
