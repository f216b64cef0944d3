"""Training and evaluation tf.data pipelines: one entry point, `load_data(spec, space, batch_size)`.

Specs:
  digits        scikit-learn's bundled handwritten digits (real, offline): the default for demos and tests
  npz:PATH      arrays x_train, y_train, x_test, y_test (e.g. ../shared/data/cifar10.npz)
  folder:PATH   ImageNet-style PATH/train/<class>/*.jpg|png and PATH/val/<class>/...
  tfds:NAME     TensorFlow Datasets, when installed and already downloaded (never downloads)

The order and augmentation of every training epoch are a pure function of (seed, epoch): stateless shuffles and
stateless random crops/flips. So a run resumed at an epoch boundary sees exactly the batches the killed run would
have seen, which is what makes resumed training bit-comparable to an uninterrupted one.

Images are normalised to [-1, 1] with a fixed affine map (x / 127.5 - 1), so a deployed .tflite needs no dataset
statistics.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Callable

import numpy as np

import tfwidth  # noqa: F401
from device_profiler.checks import count
from tfwidth.arch import DEFAULT_PRESET
from tfwidth.errors import ArgumentParser, UsageError
from tfwidth.space import SearchSpace, add_space_options, preset, space_from_args

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


def normalise(images):
    """Images (any dtype, 0-255) -> float32 in [-1, 1] by the fixed map x / 127.5 - 1, so a deployed model needs no
    dataset statistics."""
    import tensorflow as tf
    return tf.cast(images, tf.float32) / 127.5 - 1.0


@dataclasses.dataclass
class _Source:
    name: str
    classes: int
    num_train: int
    num_eval: int
    flip: bool
    # (index tensor) -> uint8/float image tensor HxWxC at native size, and its label; built lazily in the graph
    train_item: Callable
    eval_ds: Callable  # () -> unbatched dataset of (image, label) at native size
    native_hw: tuple | None  # known (H, W) for arrays; None for decoded files (resized per image)
    files: tuple = ()  # image files of a folder dataset (train then val), to name one that fails to decode


class Data:
    """``holdout``: the last N training images (after any train limit) are kept out of training, for measuring the
    trained supernet on images it never saw (``holdout_batches``, the probe's ``--probe-holdout``)."""

    def __init__(self, source: _Source, space: SearchSpace, batch_size: int, seed: int, holdout: int = 0):
        import tensorflow as tf
        self._tf = tf
        self.source = source
        self.space = space
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.name = source.name
        self.classes = source.classes
        self.holdout = int(holdout)
        self.num_train = source.num_train - self.holdout
        self.num_eval = source.num_eval
        if self.batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {batch_size}")
        if self.holdout < 0 or (self.holdout and self.holdout < self.batch_size):
            raise UsageError(f"held-out images ({self.holdout}) must be 0 or at least one batch of "
                             f"{self.batch_size}; use --probe-images >= {self.batch_size}")
        if self.holdout and self.num_train < self.batch_size:
            raise UsageError(f"dataset {self.name} has {source.num_train} training images: holding {self.holdout} "
                             f"out leaves less than one batch of {self.batch_size}; use fewer --probe-images")
        if self.num_train < self.batch_size:
            raise UsageError(f"dataset {self.name} has {self.num_train} training images, fewer than one batch of "
                             f"{self.batch_size}; use a smaller --batch-size")
        self.steps_per_epoch = self.num_train // self.batch_size
        self.resolution = space.resolution

    # ---- preprocessing --------------------------------------------------------------------------------------
    def _resize(self, img):
        tf = self._tf
        r = self.resolution
        img = tf.cast(img, tf.float32)
        if self.source.native_hw is not None and tuple(self.source.native_hw) == (r, r):
            return img
        return tf.image.resize(img, (r, r), method="bilinear", antialias=True)

    def _augment(self, img, seed):
        """Pad-and-crop (1/8 of the side) plus, where the data allows it, a horizontal flip; all stateless."""
        tf = self._tf
        r = self.resolution
        pad = max(1, r // 8)
        img = tf.pad(img, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        img = tf.image.stateless_random_crop(img, (r, r, self.space.in_channels), seed=seed)
        if self.source.flip:
            img = tf.image.stateless_random_flip_left_right(img, seed=seed[::-1])
        return img

    def _epoch(self, epoch, augment=True, pipeline=(0, 1), batch=None):
        tf = self._tf
        n = self.num_train
        epoch = tf.cast(epoch, tf.int64)
        seed = tf.stack([tf.constant(self.seed, tf.int64), epoch])
        perm = tf.argsort(tf.random.stateless_uniform([n], seed=seed))
        perm = perm[: self.steps_per_epoch * self.batch_size]
        index, count = pipeline
        if count > 1:
            # This pipeline's rows of every global batch, chosen before any image is read or decoded: each
            # worker loads only its own share, and the pipelines' shares of a step make up that step's global batch
            per = self.batch_size // count
            perm = tf.reshape(tf.reshape(perm, [self.steps_per_epoch, count, per])[:, index, :], [-1])
        ds = tf.data.Dataset.from_tensor_slices(tf.cast(perm, tf.int64))

        def item(i):
            img, label = self.source.train_item(i)
            img = self._resize(img)
            if augment:
                img = self._augment(img, tf.stack([epoch * 1_000_003 + i, tf.constant(self.seed, tf.int64) + 17]))
            return normalise(img), tf.cast(label, tf.int32)

        return ds.map(item, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) \
                 .batch(batch or self.batch_size, drop_remainder=True)

    # ---- public pipelines -----------------------------------------------------------------------------------
    def train_epochs(self, start_epoch: int, end_epoch: int, augment: bool = True, pipeline: tuple = (0, 1),
                     batch: int | None = None):
        """Training batches of epochs [start_epoch, end_epoch). ``pipeline`` (index, count): only the index-th of
        ``count`` equal slices of every global batch (a worker's input pipeline under a multi-worker strategy),
        cut into batches of ``batch`` rows (default: the slice; its replicas' batches when smaller)."""
        tf = self._tf
        index, count = int(pipeline[0]), int(pipeline[1])
        if count < 1 or not 0 <= index < count or self.batch_size % count:
            raise UsageError(f"batch size {self.batch_size} does not split into {count} input pipelines; use a "
                             f"--batch-size multiple of {count}")
        per = self.batch_size // count
        batch = int(batch or per)
        if per % batch:
            raise UsageError(f"a pipeline's {per} rows per step do not split into batches of {batch}")
        return tf.data.Dataset.range(int(start_epoch), int(end_epoch)) \
            .flat_map(lambda e: self._epoch(e, augment, (index, count), batch)).prefetch(tf.data.AUTOTUNE)

    def train_epoch(self, epoch: int, augment: bool = True):
        return self.train_epochs(epoch, epoch + 1, augment)

    @property
    def eval(self):
        tf = self._tf
        return self.source.eval_ds() \
            .map(lambda x, y: (normalise(self._resize(x)), tf.cast(y, tf.int32)),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) \
            .batch(self.batch_size).prefetch(tf.data.AUTOTUNE)

    def calibration(self, batches: int):
        """Training images with training augmentation, for BatchNorm re-estimation (fixed order: epoch 0)."""
        return self.train_epoch(0).take(int(batches))

    def representative(self, n: int) -> np.ndarray:
        """n training images without augmentation, as float32 numpy (int8 calibration, agreement checks)."""
        out, got = [], 0
        for x, _ in self.train_epoch(0, augment=False):
            out.append(x.numpy())
            got += len(out[-1])
            if got >= n:
                break
        return np.concatenate(out)[:n]

    def holdout_batches(self) -> list:
        """The held-out images as whole batches [(x, y)] of numpy arrays, without augmentation, in order."""
        tf = self._tf
        n = self.holdout // self.batch_size * self.batch_size
        idx = tf.range(self.num_train, self.num_train + n, dtype=tf.int64)

        def item(i):
            img, label = self.source.train_item(i)
            return normalise(self._resize(img)), tf.cast(label, tf.int32)

        ds = tf.data.Dataset.from_tensor_slices(idx).map(item).batch(self.batch_size, drop_remainder=True)
        return [(x.numpy(), y.numpy()) for x, y in ds]

    def eval_arrays(self, limit: int | None = None):
        xs, ys = [], []
        for x, y in self.eval:
            xs.append(x.numpy()), ys.append(y.numpy())
            if limit and sum(len(a) for a in ys) >= limit:
                break
        x, y = np.concatenate(xs), np.concatenate(ys)
        return (x[:limit], y[:limit]) if limit else (x, y)

    def describe(self) -> str:
        held = f" (+{self.holdout} held out for the probe)" if self.holdout else ""
        return (f"dataset {self.name}: {self.num_train} train{held} / {self.num_eval} eval images, {self.classes} classes, "
                f"{self.resolution}px, batch {self.batch_size} ({self.steps_per_epoch} steps/epoch)")


# ---- sources -------------------------------------------------------------------------------------------------
def _array_source(name, x_train, y_train, x_test, y_test, flip, classes_expected, train_limit, eval_limit):
    import tensorflow as tf
    x_train, x_test = _as_images(x_train, f"{name} x_train"), _as_images(x_test, f"{name} x_test")
    y_train, y_test = _as_labels(y_train, len(x_train), f"{name} y_train"), _as_labels(y_test, len(x_test), f"{name} y_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UsageError(f"{name}: train images are {x_train.shape[1:]} but test images are {x_test.shape[1:]}; "
                         f"both splits must have one image shape")
    _check_labels(name, y_train, y_test, classes_expected)
    if train_limit:
        x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    if eval_limit:
        x_test, y_test = x_test[:eval_limit], y_test[:eval_limit]
    xt = tf.constant(x_train)
    yt = tf.constant(y_train)
    return _Source(
        name=name, classes=classes_expected, num_train=len(x_train), num_eval=len(x_test), flip=flip,
        train_item=lambda i: (tf.gather(xt, i), tf.gather(yt, i)),
        eval_ds=lambda: tf.data.Dataset.from_tensor_slices((x_test, y_test)),
        native_hw=tuple(x_train.shape[1:3]))


def _as_images(x, what):
    x = np.asarray(x)
    if x.ndim == 3:  # grayscale N,H,W
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) == 0:
        raise UsageError(f"{what} has shape {x.shape}; expected (N, H, W, 3) or (N, H, W) images")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
            raise UsageError(f"{what} must hold finite numbers (uint8 0..255 or floats 0..255)")
        x = x.astype(np.float32)
    return x


def _as_labels(y, n, what):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise UsageError(f"{what} has shape {y.shape}; expected ({n},) integer labels, one per image")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise UsageError(f"{what} must hold integer class labels")
    return y.astype(np.int32)


def _check_labels(name, y_train, y_test, classes):
    for what, y in (("y_train", y_train), ("y_test", y_test)):
        if y.min() < 0 or y.max() >= classes:
            raise UsageError(f"{name} {what} has labels {int(y.min())}..{int(y.max())}, out of range for the space's "
                             f"{classes} classes (0..{classes - 1}); make a space with --classes matching the data")
    found = int(max(y_train.max(), y_test.max())) + 1
    if found != classes:
        raise UsageError(f"dataset {name} has {found} classes but the space has {classes}; "
                         f"make a space with --classes {found}")


def _digits(space, train_limit, eval_limit):
    from sklearn.datasets import load_digits
    d = load_digits()
    # 8x8 images of 0..16 ink -> 0..255 grey; a fixed stratified split so every run sees the same test set
    x = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
    y = d.target.astype(np.int32)
    rng = np.random.default_rng(0)
    test = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        test[rng.choice(idx, size=len(idx) // 5, replace=False)] = True
    train_idx = rng.permutation(np.flatnonzero(~test))
    return _array_source("digits", x[train_idx], y[train_idx], x[test], y[test], flip=False,
                         classes_expected=space.classes, train_limit=train_limit, eval_limit=eval_limit)


def _npz(path, space, train_limit, eval_limit, flip):
    p = Path(path)
    if not p.exists():
        raise UsageError(f"npz file {p} does not exist; give npz:PATH to a file with x_train, y_train, x_test, y_test")
    try:
        z = np.load(p, allow_pickle=False)
    except Exception as e:  # a zip error, a pickle refusal: all mean the file is not what we need
        raise UsageError(f"cannot read {p} as an npz archive ({type(e).__name__}: {e})") from None
    with z:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
        if missing:
            raise UsageError(f"npz file {p} lacks arrays {missing}; it needs x_train, y_train, x_test, y_test "
                             f"(it has {z.files})")
        try:
            arrays = [z[k] for k in ("x_train", "y_train", "x_test", "y_test")]
        except Exception as e:  # object arrays (tfwidth never unpickles), a truncated member
            raise UsageError(f"cannot read the arrays of npz file {p} ({e}); save plain numeric arrays (no object "
                             f"dtype) with np.savez") from None
    return _array_source(f"npz:{p.name}", *arrays, flip=flip, classes_expected=space.classes,
                         train_limit=train_limit, eval_limit=eval_limit)


def _list_folder(root: Path, split: str):
    d = root / split
    if not d.is_dir():
        raise UsageError(f"folder dataset {root} has no {split}/ directory; expected {root}/train/<class>/*.png "
                         f"and {root}/val/<class>/*.png")
    classes = sorted(c.name for c in d.iterdir() if c.is_dir())
    files, labels = [], []
    for k, c in enumerate(classes):
        fs = sorted(str(f) for f in (d / c).iterdir() if f.suffix.lower() in IMAGE_EXTS)
        files += fs
        labels += [k] * len(fs)
    return classes, files, labels


def first_undecodable(files) -> tuple[str, str] | None:
    """(file, reason) of the first image TensorFlow's decoder (the one the pipelines use) refuses, else None."""
    import tensorflow as tf
    for f in files:
        try:
            tf.io.decode_image(tf.io.read_file(f), channels=3, expand_animations=False)
        except (tf.errors.OpError, ValueError) as e:
            return f, (str(e).strip().splitlines() or [type(e).__name__])[0]
    return None


def _explain_decode_error(files, exc) -> str | None:
    """run_cli's translation of a decode failure deep in a tf.data pipeline of this folder dataset."""
    import tensorflow as tf
    if not isinstance(exc, tf.errors.InvalidArgumentError):
        return None
    bad = first_undecodable(files)
    if bad is None:
        return None
    return (f"image {bad[0]} cannot be decoded ({bad[1]}); replace or delete it (python -m tfwidth.data "
            f"folder:PATH checks every image), then run the same command again (add --resume to continue training)")


def _folder(path, space, train_limit, eval_limit, flip):
    import tensorflow as tf
    root = Path(path)
    if not root.is_dir():
        raise UsageError(f"folder dataset {root} does not exist")
    ctr, ftr, ltr = _list_folder(root, "train")
    cva, fva, lva = _list_folder(root, "val")
    if ctr != cva:
        only_t, only_v = sorted(set(ctr) - set(cva)), sorted(set(cva) - set(ctr))
        raise UsageError(f"folder dataset {root}: class folders differ between train/ and val/ "
                         f"(only in train: {only_t}, only in val: {only_v}); both splits need the same classes")
    if not ftr or not fva:
        raise UsageError(f"folder dataset {root} has no images in {'train' if not ftr else 'val'}/ "
                         f"(extensions: {', '.join(sorted(IMAGE_EXTS))})")
    if len(ctr) != space.classes:
        raise UsageError(f"dataset folder:{root} has {len(ctr)} classes but the space has {space.classes}; "
                         f"make a space with --classes {len(ctr)}")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ftr))
    ftr, ltr = [ftr[i] for i in order], [ltr[i] for i in order]
    if train_limit:
        ftr, ltr = ftr[:train_limit], ltr[:train_limit]
    if eval_limit:
        # val/ is listed class by class: a limit must take a fixed random subset, not the first classes
        keep = np.sort(np.random.default_rng(1).permutation(len(fva))[:eval_limit])
        fva, lva = [fva[i] for i in keep], [lva[i] for i in keep]
    files_t, labels_t = tf.constant(ftr), tf.constant(ltr, tf.int32)
    from device_profiler.errors import explain_with
    explain_with("folder images", functools.partial(_explain_decode_error, tuple(ftr) + tuple(fva)))

    def decode(f):
        img = tf.io.decode_image(tf.io.read_file(f), channels=3, expand_animations=False)
        img.set_shape([None, None, 3])
        return img

    return _Source(name=f"folder:{root.name}", classes=len(ctr), num_train=len(ftr), num_eval=len(fva), flip=flip,
                   train_item=lambda i: (decode(tf.gather(files_t, i)), tf.gather(labels_t, i)),
                   eval_ds=lambda: tf.data.Dataset.from_tensor_slices((fva, lva)).map(lambda f, y: (decode(f), y)),
                   native_hw=None, files=tuple(ftr) + tuple(fva))


def _tfds(name, space, train_limit, eval_limit, flip):
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UsageError("tfds:NAME needs tensorflow-datasets (pip install tensorflow-datasets) with the data "
                         "already downloaded; or export it to an npz and use npz:PATH") from None
    try:
        builder = tfds.builder(name)
    except Exception as e:
        raise UsageError(f"tfds dataset {name!r} is unknown ({e})") from None
    if not builder.is_prepared():
        raise UsageError(f"tfds dataset {name!r} is not downloaded under {builder.data_dir}; tfwidth never "
                         f"downloads: prepare it once with tfds on a machine with network")
    splits = builder.info.splits
    eval_split = "test" if "test" in splits else "validation"
    train = tfds.as_numpy(builder.as_dataset(split="train", as_supervised=True))
    xs, ys = zip(*train)
    ev = tfds.as_numpy(builder.as_dataset(split=eval_split, as_supervised=True))
    xe, ye = zip(*ev)
    # Materialised: tfds sources worth searching on a 2-core machine fit in memory (CIFAR-sized).
    return _array_source(f"tfds:{name}", np.stack(xs), np.array(ys), np.stack(xe), np.array(ye), flip=flip,
                         classes_expected=space.classes, train_limit=train_limit, eval_limit=eval_limit)


def load_data(spec: str, space: SearchSpace, batch_size: int, *, seed: int = 0, train_limit: int | None = None,
              eval_limit: int | None = None, flip: bool | None = None, holdout: int = 0) -> Data:
    """Parse a dataset spec and return its pipelines; every bad input is a one-line UsageError."""
    kind, _, arg = spec.partition(":")
    flip = True if flip is None else flip
    if kind == "digits" and not arg:
        src = _digits(space, train_limit, eval_limit)  # digits are not mirror-symmetric: never flipped
    elif kind == "npz" and arg:
        src = _npz(arg, space, train_limit, eval_limit, flip)
    elif kind == "folder" and arg:
        src = _folder(arg, space, train_limit, eval_limit, flip)
    elif kind == "tfds" and arg:
        src = _tfds(arg, space, train_limit, eval_limit, flip)
    else:
        raise UsageError(f"unknown dataset {spec!r}; use digits, npz:PATH, folder:PATH or tfds:NAME")
    return Data(src, space, batch_size, seed, holdout)


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m tfwidth.data", description=(
        "Check that a dataset loads for a search space (a folder: every image decodes) and print its size "
        "(digits, npz:PATH, folder:PATH, "
        "tfds:NAME)."))
    p.add_argument("dataset", nargs="?", default="digits")
    add_space_options(p, default=f"the {DEFAULT_PRESET} preset")
    p.add_argument("--batch-size", type=count(1, 1 << 20), default=64)
    a = p.parse_args(argv)
    space = space_from_args(a, default=lambda: preset(DEFAULT_PRESET))
    data = load_data(a.dataset, space, a.batch_size)
    bad = first_undecodable(data.source.files)  # a corrupt image would otherwise stop a training run midway
    if bad:
        raise UsageError(f"image {bad[0]} cannot be decoded ({bad[1]}); replace or delete it")
    print(data.describe())
    return 0


if __name__ == "__main__":
    import sys
    from tfwidth.errors import run_cli
    sys.exit(run_cli(main))
